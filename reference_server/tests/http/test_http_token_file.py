"""ENV-3 and the threat model: a config file that holds the API token is flagged
when other users can read it."""

from __future__ import annotations

import os
from pathlib import Path

from http_helpers import start_server, stop_server

WARNING = "holds the API token ([http] token) and is readable by other users (mode 644)"


def test_env_3_a_config_file_with_the_token_readable_by_others_is_flagged(
    tmp_path: Path,
) -> None:
    old = os.umask(0o022)
    try:
        server = start_server(tmp_path)  # the helper's config has [http] token
    finally:
        os.umask(old)
    stop_server(server)
    assert WARNING in (tmp_path / "server.log").read_text()
    assert "chmod 600" in (tmp_path / "server.log").read_text()

    server.config.chmod(0o600)
    (tmp_path / "server.log").unlink()
    stop_server(start_server(tmp_path))
    assert "readable by other users" not in (tmp_path / "server.log").read_text()
