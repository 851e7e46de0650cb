/**
 * `backing-images/<name>-<uuid>/backing.cfg`, every BIM version
 * (longhorn-node.md A.5; BIM pkg/util/util.go `SyncingFileConfig`):
 *
 *   v1_2021* (LH 1.1.x)              name, uuid, size, url
 *   v2_*, v3_20220318 (LH 1.2.x)     name, uuid, size, expectedChecksum, currentChecksum
 *   v3_20220531+ .. v1.6.x           + modificationTime (and `name` becomes the in-container path)
 *   v1.7.0+                          + virtualSize
 *   v1.8.0+                          + realSize
 *
 * Every key may be missing; `name` is never trusted to find the file (the
 * directory name and `backing` itself are).
 */
import { ChainfsError, oneLine } from '../../errors';

export interface BackingCfg {
  name?: string;
  uuid?: string;
  size?: number;
  virtualSize?: number;
  realSize?: number;
  url?: string;
  expectedChecksum?: string;
  /** Lowercase hex SHA-512 of the `backing` file's bytes as stored. */
  currentChecksum?: string;
  modificationTime?: string;
}

const STRINGS = ['name', 'uuid', 'url', 'expectedChecksum', 'currentChecksum', 'modificationTime'] as const;
const NUMBERS = ['size', 'virtualSize', 'realSize'] as const;

/** Parses leniently (missing or mistyped keys are left out); throws a ChainfsError only for text that is not a JSON object. */
export function parseBackingCfg(file: string, text: string): BackingCfg {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ChainfsError(file, `invalid JSON (${oneLine((e as Error).message, 120)})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ChainfsError(file, 'expected a JSON object');
  const o = v as Record<string, unknown>;
  const cfg: BackingCfg = {};
  for (const k of STRINGS) if (typeof o[k] === 'string') cfg[k] = o[k] as string;
  for (const k of NUMBERS) if (typeof o[k] === 'number' && Number.isSafeInteger(o[k])) cfg[k] = o[k] as number;
  return cfg;
}
