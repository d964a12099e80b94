// SPOOL-2: the result that could not be delivered, in a file the server
// collects (SPOOL-3): written to path.tmp, flushed to disk, renamed, so the
// server never reads a partial file.

import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";

export function writeSpool(path: string, lines: readonly Uint8Array[]): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    fchmodSync(fd, 0o600);
    for (const line of lines) {
      for (let at = 0; at < line.length; ) at += writeSync(fd, line, at);
    }
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(tmp);
    throw error;
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dir = openSync(dirname(path), "r"); // the rename is durable once the directory is
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch {
    // a directory that cannot be opened for reading: the file is there all the same
  }
}
