/**
 * Finding what a target holds from listings and cfgs only (no block is
 * read): volume names (`getVolumeNames`, backupstore `config.go`: three
 * delimiter levels, `volumes/` → `XX/` → `YY/` → names), each volume's
 * volume.cfg and backup cfgs, the backing-image cfgs, and deletion locks.
 *
 * Costs on S3: 1 + (XX dirs) + (XX/YY dirs) LISTs for the volume names
 * (none when the volume is named), then per volume one GET of volume.cfg,
 * one LIST of backups/ and one GET per backup cfg; per backing image one
 * LIST level and one GET. Up to `jobs` requests run at once.
 *
 * A lazy open (the mount) stops after the volume names and the backing
 * images: a volume's volume.cfg, backups/ LIST, backup cfgs and locks/ LIST
 * are read when its directory is first listed (`loadVolume`).
 */
import { ChainfsError } from '../../errors';
import { parseBackingImageCfg, parseBackupCfg, parseBackupCfgHead, parseBlocks, parseVolumeCfg, type BackingImageCfg, type BackupCfg, type VolumeCfg } from './cfg';
import {
  BACKING_IMAGES, DEFAULT_BLOCK_SIZE, NAME_RE, VOLUMES, backingImageCfgKey, backupCfgKey, backupNameOfFile, backupsDir, longhornChecksum,
  volumeCfgKey, volumeDir,
} from './names';
import { MAX_CFG_BYTES, TargetMissing, type BackupTarget } from './target';

/** Cfgs up to this size are kept after listing, so opening the view costs no second GET. */
const KEEP_CFG_BYTES = 1 << 20;
/**
 * Listing reads a backup cfg's first 256 KiB only (one ranged GET): all its
 * fields but the block list. A 1 TiB backup's cfg is ~60 MiB; it is read
 * whole when its view is opened.
 */
const CFG_HEAD_BYTES = 256 << 10;
/** Parallel listing requests (cfgs are small) unless --jobs says otherwise. */
export const LIST_JOBS = 8;
/** A lock is live for 150 s after its file was last written (`lock.go`). */
const LOCK_EXPIRY_MS = 150_000;

export interface BackupEntry {
  volume: string;
  name: string;
  cfgKey: string;
  cfg?: BackupCfg;
  /** The cfg text, when small enough to keep. */
  text?: string;
  problem?: string;
  /** The cfg was read but its Blocks cannot be used (an impossible offset, a bad checksum): a damaged backup. */
  damaged?: boolean;
}

export interface VolumeEntry {
  name: string;
  /** Only the name is known (a lazy open): its cfgs are read when its directory is first listed. */
  unlisted?: boolean;
  cfg?: VolumeCfg;
  problem?: string;
  backups: BackupEntry[];
}

export interface BackingImageEntry {
  name: string;
  cfgKey: string;
  cfg?: BackingImageCfg;
  text?: string;
  problem?: string;
  /** The cfg was read but its Blocks cannot be used. */
  damaged?: boolean;
}

/** Runs `fn` over `items`, at most `n` at once, results in order. */
export async function mapLimit<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** Every volume name under `backupstore/volumes/`; names that fail Longhorn's rule are reported in `skipped`. */
export async function listVolumeNames(t: BackupTarget, jobs: number, skipped: string[]): Promise<string[]> {
  const xx = (await t.list(VOLUMES)).dirs.filter((d) => /^[0-9a-f]{2}$/.test(d));
  const xxyy = (await mapLimit(xx, jobs, async (a) => (await t.list(`${VOLUMES}${a}/`)).dirs
    .filter((d) => /^[0-9a-f]{2}$/.test(d)).map((b) => `${a}/${b}`))).flat();
  const names = (await mapLimit(xxyy, jobs, async (p) => (await t.list(`${VOLUMES}${p}/`)).dirs
    .map((n) => ({ n, p })))).flat();
  const out: string[] = [];
  for (const { n, p } of names) {
    if (n === 'BACKINGIMAGE') continue; // the backing images' lock directory (types/types.go)
    const c = longhornChecksum(n);
    if (!NAME_RE.test(n) || `${c.slice(0, 2)}/${c.slice(2, 4)}` !== p) skipped.push(`${VOLUMES}${p}/${n}`);
    else out.push(n);
  }
  return out.sort();
}

/** A cfg's text; refused in one line (ChainfsError) past `maxBytes` without reading it. */
async function getText(t: BackupTarget, key: string, maxBytes = MAX_CFG_BYTES): Promise<string> {
  return (await t.get(key, maxBytes)).toString('utf8');
}

/** volume.cfg and lock files are a few hundred bytes: anything past this is not one. */
const SMALL_CFG_BYTES = 16 << 20;

/** The one-line problem of a block list that does not parse, or undefined. */
function checkBlocks(parse: () => unknown): string | undefined {
  try {
    parse();
    return undefined;
  } catch (e) {
    if (e instanceof ChainfsError) return e.message;
    throw e;
  }
}

function problemOf(e: unknown, t: BackupTarget, key: string): string {
  if (e instanceof TargetMissing) return `${t.where(key)}: missing`;
  if (e instanceof ChainfsError) return e.message;
  throw e;
}

/** A volume's volume.cfg and every backup cfg (a cfg that fails to load becomes that backup's problem). */
export async function loadVolume(t: BackupTarget, name: string, jobs: number): Promise<VolumeEntry> {
  const v: VolumeEntry = { name, backups: [] };
  const key = volumeCfgKey(name);
  try {
    v.cfg = parseVolumeCfg(t.where(key), await getText(t, key, SMALL_CFG_BYTES));
  } catch (e) {
    v.problem = problemOf(e, t, key);
  }
  const files = (await t.list(backupsDir(name))).files;
  const names = files.map((f) => backupNameOfFile(f.name)).filter((n): n is string => n !== undefined);
  v.backups = await mapLimit(names, jobs, async (b) => {
    const cfgKey = backupCfgKey(name, b);
    const e: BackupEntry = { volume: name, name: b, cfgKey };
    try {
      const { data, size } = await t.head(cfgKey, CFG_HEAD_BYTES);
      const head = data.toString('utf8');
      const partial = data.length < size ? parseBackupCfgHead(t.where(cfgKey), head) : undefined;
      let text: string | undefined;
      if (partial) e.cfg = partial;
      else {
        // Not a cfg head: read the whole only if it could be one (JSON), and not past what can be parsed.
        if (data.length < size && !/^\s*\{/.test(head)) {
          throw new ChainfsError(t.where(cfgKey), `not a Longhorn backup cfg: ${size} bytes that do not begin with a JSON object`);
        }
        text = data.length < size ? await getText(t, cfgKey) : head;
        e.cfg = parseBackupCfg(t.where(cfgKey), text);
        if (text.length <= KEEP_CFG_BYTES) e.text = text;
      }
      // A cfg read whole has its block list checked now, so that a damaged one is listed as such
      // (a large one, listed from its head, is checked when its view is opened or verified).
      const blocksProblem = text !== undefined && e.cfg.createdTime !== ''
        ? checkBlocks(() => parseBlocks(t.where(cfgKey), text!, e.cfg!.blockSize, v.cfg?.size)) : undefined;
      if (blocksProblem) {
        e.problem = blocksProblem;
        e.damaged = true;
      } else if (e.cfg.createdTime === '') {
        e.problem = `backup ${b} of volume ${name} is in progress or failed (its cfg has no CreatedTime); Longhorn refuses it too`;
      } else if (v.problem) e.problem = `volume ${name}: ${v.problem}`;
    } catch (err) {
      e.problem = problemOf(err, t, cfgKey);
    }
    return e;
  });
  return v;
}

/** Backing-image backups: `names` given, or every one listed. */
export async function loadBackingImages(t: BackupTarget, names: string[] | undefined, jobs: number): Promise<BackingImageEntry[]> {
  const list = names ?? (await t.list(BACKING_IMAGES)).dirs.filter((n) => NAME_RE.test(n));
  return mapLimit(list, jobs, async (name) => {
    const cfgKey = backingImageCfgKey(name);
    const e: BackingImageEntry = { name, cfgKey };
    try {
      const text = await getText(t, cfgKey);
      e.cfg = parseBackingImageCfg(t.where(cfgKey), text);
      if (text.length <= KEEP_CFG_BYTES) e.text = text;
      const size = e.cfg.size;
      const blocksProblem = checkBlocks(() => parseBlocks(t.where(cfgKey), text, DEFAULT_BLOCK_SIZE, size === 0 ? undefined : size));
      if (blocksProblem) {
        e.problem = blocksProblem;
        e.damaged = true;
      } else if (e.cfg.completeTime === '') e.problem = `backing image ${name}: its backup is in progress or failed (no CompleteTime); Longhorn refuses it too`;
    } catch (err) {
      e.problem = problemOf(err, t, cfgKey);
    }
    return e;
  });
}

/**
 * A warning when a deletion lock (type 2, `lock.go`) of the volume is live:
 * a backup deletion or garbage collection may remove blocks under a reader.
 */
export async function deletionLockWarning(t: BackupTarget, volume: string): Promise<string | undefined> {
  const dir = `${volumeDir(volume)}locks/`;
  const now = Date.now();
  for (const f of (await t.list(dir)).files) {
    if (!f.name.endsWith('.lck') || (f.mtime && now - f.mtime.getTime() > LOCK_EXPIRY_MS)) continue;
    try {
      const lock = JSON.parse(await getText(t, dir + f.name, SMALL_CFG_BYTES)) as { Type?: number };
      if (lock.Type === 2) {
        return `volume ${volume}: a deletion lock is live (${t.where(dir + f.name)}): Longhorn is deleting a backup or collecting garbage, blocks may disappear while you read`;
      }
    } catch {
      // gone meanwhile, or not a lock
    }
  }
  return undefined;
}
