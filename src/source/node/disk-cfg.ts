/**
 * `longhorn-disk.cfg`: a disk root's identity (longhorn-node.md A.2). Written
 * once by the manager with Go's json.Marshal and never rewritten, so all
 * three shapes live on upgraded clusters:
 *
 *   v0.8.1 – v1.6.x   {"diskUUID":"<uuid>"}                                   (manager 1e4f94549)
 *   v1.7.0 – v1.10.x  {"diskName":"<n>","diskUUID":"<uuid>","diskDriver":""}  (a61d4d185)
 *   v1.11.0 +         ... ,"state":"ready"}                                  (cbf1d6c46; util/util.go:649-654)
 *
 * Unknown keys are accepted; `diskUUID` must be a non-empty string (BIM reads
 * only that key, BIM pkg/util/util.go:135-156).
 */
import { ChainfsError, oneLine } from '../../errors';

export interface DiskCfg {
  diskUUID: string;
  /** Absent before v1.7. */
  diskName?: string;
  /** "" for filesystem disks; absent before v1.7. */
  diskDriver?: string;
  /** Absent before v1.11. */
  state?: string;
  /** Which manager versions write this shape, from the keys present. */
  shape: 'v0.8.1-v1.6' | 'v1.7-v1.10' | 'v1.11+' | 'unknown';
}

/** Parses the cfg text; throws a one-line ChainfsError naming `file` when it is not a disk cfg. */
export function parseDiskCfg(file: string, text: string): DiskCfg {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ChainfsError(file, `not a Longhorn disk cfg: invalid JSON (${oneLine((e as Error).message, 120)})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ChainfsError(file, 'not a Longhorn disk cfg: expected a JSON object');
  }
  const o = v as Record<string, unknown>;
  if (typeof o.diskUUID !== 'string' || o.diskUUID === '') {
    throw new ChainfsError(file, 'not a Longhorn disk cfg: "diskUUID" is missing or empty');
  }
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const cfg: DiskCfg = { diskUUID: o.diskUUID, shape: 'unknown' };
  const diskName = str('diskName');
  const diskDriver = str('diskDriver');
  const state = str('state');
  if (diskName !== undefined) cfg.diskName = diskName;
  if (diskDriver !== undefined) cfg.diskDriver = diskDriver;
  if (state !== undefined) cfg.state = state;
  const keys = Object.keys(o).sort().join(',');
  if (keys === 'diskUUID') cfg.shape = 'v0.8.1-v1.6';
  else if (keys === 'diskDriver,diskName,diskUUID') cfg.shape = 'v1.7-v1.10';
  else if (keys === 'diskDriver,diskName,diskUUID,state') cfg.shape = 'v1.11+';
  return cfg;
}
