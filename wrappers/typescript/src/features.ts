// Which extensions this worker uses with the server (NEG-2).

import type { Payload } from "./payload.js";

/** The extensions this package implements, in the order it names them in hello. */
export const IMPLEMENTED_FEATURES = ["auth", "replay", "control", "spool", "checkpoint"] as const;
export type Feature = (typeof IMPLEMENTED_FEATURES)[number];

/**
 * What the payload offers and this package implements. Every extension needs
 * hello, and hello needs the token (NEG-2, AUTH-2); spool needs replay and a
 * spool path. Empty for a v1 server, which gets a plain v1 worker (NEG-3).
 */
export function negotiate(payload: Payload): Feature[] {
  const offered = new Set(payload.features);
  if (!offered.has("auth") || payload.token === undefined) return [];
  return IMPLEMENTED_FEATURES.filter((feature) => {
    if (!offered.has(feature)) return false;
    if (feature === "spool") return offered.has("replay") && payload.spoolPath !== undefined;
    return true;
  });
}
