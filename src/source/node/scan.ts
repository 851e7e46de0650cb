/**
 * Walking one data root (longhorn-node.md A, "What an offline reader must
 * do"): its cfg, every `replicas/<volume>-<8 chars>/`, what under `replicas/`
 * is not a replica directory, the leftovers under `tmp/`, and every
 * `backing-images/<name>-<uuid>/`. Reads directory listings, the cfg files
 * and stats only: cost is one readdir per directory named here, whatever the
 * replicas hold.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError } from '../../errors';
import { fileKind, readMetaFile } from '../replica/files';
import { type BackingCfg, parseBackingCfg } from './backing-cfg';
import { type DiskCfg, parseDiskCfg } from './disk-cfg';
import { BACKING_IMAGES_DIR, DISK_CFG, REPLICAS_DIR, TMP_DIR, parseBackingDir, volumeOfReplicaDir } from './names';

export interface ReplicaDirEntry {
  /** Directory name, `pvc-1-1a2b3c4d`. */
  dir: string;
  path: string;
  volume: string;
}

/** Something that is not part of any chain, with why it is listed. */
export interface Leftover {
  path: string;
  why: string;
  /** Apparent size in bytes for files. */
  size?: number;
}

export interface BackingDirEntry {
  /** Directory name `<name>-<uuid>`. */
  dir: string;
  path: string;
  name: string;
  uuid: string;
  /** The `backing` file, when present. */
  file?: string;
  /** Apparent size and st_blocks*512 of `backing`. */
  size?: number;
  allocatedBytes?: number;
  cfg?: BackingCfg;
  /** Why `backing.cfg` could not be read, or why `backing` is missing. */
  problems: string[];
}

export interface RootScan {
  /** Absolute path as given (resolved). */
  path: string;
  cfg: DiskCfg | null;
  replicas: ReplicaDirEntry[];
  backingDirs: BackingDirEntry[];
  /** Entries of `replicas/` and `backing-images/` that are not what their names say. */
  noise: Leftover[];
  /** Files under `tmp/`: BIM work files, maybe half-finished exports. */
  tmp: Leftover[];
  warnings: string[];
}

/** True when `dir` looks like a data root: a cfg, or a `replicas/` directory (cfg gone). */
export function looksLikeRoot(dir: string): boolean {
  return isFile(path.join(dir, DISK_CFG)) || isDir(path.join(dir, REPLICAS_DIR));
}

/** Scans `root`; throws a ChainfsError only when it is no data root at all (or cannot be listed). */
export function scanRoot(root: string): RootScan {
  const abs = path.resolve(root);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch (e) {
    throw fsError(abs, e, 'data root');
  }
  if (!st.isDirectory()) throw new ChainfsError(abs, `not a directory (${fileKind(st)}); expected a Longhorn data root`);
  const scan: RootScan = { path: abs, cfg: null, replicas: [], backingDirs: [], noise: [], tmp: [], warnings: [] };
  const cfgPath = path.join(abs, DISK_CFG);
  const hasReplicas = isDir(path.join(abs, REPLICAS_DIR));
  if (isFile(cfgPath)) {
    try {
      scan.cfg = parseDiskCfg(cfgPath, readMetaFile(cfgPath));
    } catch (e) {
      // A cfg cut short or overwritten: the replicas beside it are still what they are.
      if (!(e instanceof ChainfsError) || !hasReplicas) throw e;
      scan.warnings.push(`${e.message}; reading ${REPLICAS_DIR}/ anyway, with no disk UUID`);
    }
  } else if (hasReplicas) {
    scan.warnings.push(`${abs}: no ${DISK_CFG} (the disk may have been half-removed); reading its ${REPLICAS_DIR}/ anyway, with no disk UUID`);
  } else {
    throw new ChainfsError(abs, `not a Longhorn data root: neither ${DISK_CFG} nor ${REPLICAS_DIR}/`);
  }
  scanReplicas(scan);
  scanBackingImages(scan);
  scanTmp(scan);
  return scan;
}

function scanReplicas(scan: RootScan): void {
  const dir = path.join(scan.path, REPLICAS_DIR);
  for (const e of list(dir, scan)) {
    const p = path.join(dir, e.name);
    const volume = volumeOfReplicaDir(e.name);
    if (!e.isDirectory()) scan.noise.push({ path: p, why: `not a directory (${direntKind(e)})` });
    else if (volume === undefined) scan.noise.push({ path: p, why: 'name is not <volume>-<8 characters>: not a replica directory' });
    else scan.replicas.push({ dir: e.name, path: p, volume });
  }
}

function scanBackingImages(scan: RootScan): void {
  const dir = path.join(scan.path, BACKING_IMAGES_DIR);
  for (const e of list(dir, scan)) {
    const p = path.join(dir, e.name);
    const parsed = parseBackingDir(e.name);
    if (!e.isDirectory() || !parsed) {
      scan.noise.push({ path: p, why: e.isDirectory() ? 'name is not <name>-<8 characters>: not a backing-image directory' : `not a directory (${direntKind(e)})` });
      continue;
    }
    const entry: BackingDirEntry = { dir: e.name, path: p, name: parsed.name, uuid: parsed.uuid, problems: [] };
    const file = path.join(p, 'backing');
    try {
      const bst = fs.lstatSync(file);
      if (bst.isFile()) {
        entry.file = file;
        entry.size = bst.size;
        entry.allocatedBytes = bst.blocks * 512;
      } else {
        entry.problems.push(`${file} is ${fileKind(bst)}, not a regular file`);
      }
    } catch {
      const tmp = isFile(path.join(p, 'backing.tmp'));
      entry.problems.push(tmp ? 'only backing.tmp: the copy was never finished' : 'no backing file');
    }
    const cfgPath = path.join(p, 'backing.cfg');
    if (isFile(cfgPath)) {
      try {
        entry.cfg = parseBackingCfg(cfgPath, readMetaFile(cfgPath));
      } catch (err) {
        if (!(err instanceof ChainfsError)) throw err;
        entry.problems.push(err.message);
      }
    }
    scan.backingDirs.push(entry);
  }
}

function scanTmp(scan: RootScan): void {
  const dir = path.join(scan.path, TMP_DIR);
  for (const e of list(dir, scan)) {
    const p = path.join(dir, e.name);
    let size: number | undefined;
    try {
      const st = fs.lstatSync(p);
      if (st.isFile()) size = st.size;
    } catch {
      // gone meanwhile
    }
    const why = e.name.endsWith('.tmp')
      ? 'backing-image-manager work file (maybe a half-finished export or download)'
      : e.name.endsWith('.cfg') ? 'backing-image-manager work file config' : 'backing-image-manager work file';
    scan.tmp.push({ path: p, why, ...(size !== undefined ? { size } : {}) });
  }
}

/** Entries of `dir` sorted by name; none when it does not exist; a warning when it cannot be listed. */
function list(dir: string, scan: RootScan): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') scan.warnings.push(fsError(dir, e, 'cannot list').message);
    return [];
  }
}

function direntKind(e: fs.Dirent): string {
  if (e.isFile()) return 'a regular file';
  if (e.isSymbolicLink()) return 'a symbolic link';
  if (e.isFIFO()) return 'a FIFO';
  if (e.isSocket()) return 'a socket';
  return 'a special file';
}

function isFile(p: string): boolean {
  try {
    return fs.lstatSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return fs.lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}
