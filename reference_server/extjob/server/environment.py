"""A worker's environment: the server's own, less every secret it knows (ENV-1, ENV-3).

Workers inherit the server's environment (their ``PATH``, ``HOME``, locale),
but nothing the server holds as a secret:

- the server's own ``EXTJOB_*`` and ``DONKEYLABS_*`` variables (its API
  token's default home is ``EXTJOB_TOKEN``);
- every variable named in ``secret_env`` and the one named by ``[http]
  token_env``, whatever its name;
- any variable whose *value* is a secret the server knows (the API token,
  also when it is given in the config file and exported under another name).

The job definition's own ``env`` is passed as written: the operator put it
there for the job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from extjob.protocol import ENV_PREFIXES

from .config import ServerConfig


def secret_names(config: ServerConfig) -> frozenset[str]:
    names = set(config.secret_env)
    token_env = config.http.get("token_env")
    if isinstance(token_env, str) and token_env:
        names.add(token_env)
    return frozenset(names)


def secret_values(config: ServerConfig, environ: Mapping[str, str]) -> frozenset[str]:
    values = {environ.get(name, "") for name in secret_names(config)}
    values.add(environ.get("EXTJOB_TOKEN", ""))
    token = config.http.get("token")
    if isinstance(token, str):
        values.add(token)
    return frozenset(v for v in values if v)


def worker_environment(
    config: ServerConfig, own: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """``environ`` without the server's secrets, then the job definition's ``own`` env."""
    names = secret_names(config)
    values = secret_values(config, environ)
    env = {
        k: v
        for k, v in environ.items()
        if not k.startswith(ENV_PREFIXES) and k not in names and v not in values
    }
    env.update(own)
    return env
