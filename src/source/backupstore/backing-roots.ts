/**
 * Longhorn v1 data roots given after a backup target, used only as
 * providers of backing images: `chainfs cat TARGET /var/lib/longhorn ...`.
 * A backup never holds its volume's backing image (longhorn-backupstore.md
 * 1.9); a node's disk often still does, in
 * `<root>/backing-images/<name>-<uuid>/backing` beside `backing.cfg`
 * (longhorn-node.md A.5, longhorn-format.md 1.10).
 *
 * Cost: one readdir of each root's `backing-images/`, one stat of each
 * `backing` and one read of each `backing.cfg` (a few hundred bytes). The
 * replicas of the roots are not looked at. Nothing is written.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError } from '../../errors';
import { exists, isDirectory } from '../../files';
import { parseBackingCfg } from '../node/backing-cfg';
import { BACKING_IMAGES_DIR, DISK_CFG, REPLICAS_DIR, parseBackingDir } from '../node/names';
import { readMetaFile } from '../replica/files';

/** One `<root>/backing-images/<name>-<uuid>/` of a data root. */
export interface RootBackingCopy {
  /** The data root, resolved. */
  root: string;
  /** Backing-image name: the directory name before its last hyphen. */
  name: string;
  uuid: string;
  /** `<dir>/backing`, when it is a regular file. */
  file?: string;
  /** Its size in bytes, when it is a regular file. */
  size?: number;
  /** backing.cfg `currentChecksum` (SHA-512 hex of `backing` as stored, lowercase), when recorded. */
  checksum?: string;
  /** Why this copy cannot be used (no `backing`, a cut-short cfg, a size that disagrees). */
  problem?: string;
}

/**
 * True when `dir` is a directory a data root would be: what the node source
 * detects (`longhorn-disk.cfg` or `replicas/`), or a `backing-images/`
 * directory (a disk holding backing images only, its cfg lost).
 */
export function isBackingRoot(dir: string): boolean {
  return isDirectory(dir) && [DISK_CFG, REPLICAS_DIR, BACKING_IMAGES_DIR].some((n) => exists(path.join(dir, n)));
}

/**
 * Every backing-image copy on `roots`, in root order then directory-name
 * order. Throws ChainfsError (one line) when a root is not a data root;
 * a root without `backing-images/` gives a warning, not an error.
 */
export function scanBackingRoots(roots: string[], warnings: string[]): RootBackingCopy[] {
  const out: RootBackingCopy[] = [];
  for (const given of roots) {
    const root = path.resolve(given);
    if (!isBackingRoot(root)) {
      throw new ChainfsError(given, `not a Longhorn data root (no ${DISK_CFG}, ${REPLICAS_DIR}/ or ${BACKING_IMAGES_DIR}/): `
        + 'after a backup target, give data roots that hold its backing images');
    }
    const dir = path.join(root, BACKING_IMAGES_DIR);
    let names: string[];
    try {
      names = fs.readdirSync(dir).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(dir, e, 'cannot list');
      warnings.push(`${root}: no ${BACKING_IMAGES_DIR}/ directory: it provides no backing image`);
      continue;
    }
    for (const n of names) {
      const parsed = parseBackingDir(n);
      if (parsed && isDirectory(path.join(dir, n))) out.push(readCopy(root, path.join(dir, n), parsed.name, parsed.uuid));
    }
  }
  return out;
}

/**
 * One copy: `backing` must be a regular file; `backing.cfg` is read
 * leniently (any BIM version's keys). Its `name` is not used to match: from
 * BIM v3_20220531 on it is the file's path inside the BIM container, not
 * the image name (longhorn-node.md A.5); the directory name is what the
 * engine and the manager go by.
 */
function readCopy(root: string, dir: string, name: string, uuid: string): RootBackingCopy {
  const c: RootBackingCopy = { root, name, uuid };
  const file = path.join(dir, 'backing');
  let size: number | undefined;
  try {
    const st = fs.lstatSync(file);
    if (st.isFile()) {
      c.file = file;
      size = st.size;
      c.size = size;
    } else c.problem = `${file} is not a regular file`;
  } catch {
    c.problem = exists(`${file}.tmp`) ? `${dir}: only backing.tmp (the copy was never finished)` : `${dir}: no backing file`;
  }
  const cfgPath = path.join(dir, 'backing.cfg');
  if (exists(cfgPath)) {
    try {
      const cfg = parseBackingCfg(cfgPath, readMetaFile(cfgPath));
      if (cfg.currentChecksum) c.checksum = cfg.currentChecksum.toLowerCase();
      if (cfg.size !== undefined && size !== undefined && cfg.size !== size) {
        c.problem ??= `${cfgPath} says size ${cfg.size}, ${file} has ${size} bytes (a copy cut short or changed)`;
      }
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      c.problem ??= e.message;
    }
  }
  return c;
}
