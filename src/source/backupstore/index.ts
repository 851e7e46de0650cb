/**
 * Longhorn backup targets as a source: a directory holding `backupstore/`
 * (a mounted NFS/CIFS share or a copy), `vfs:///path`, `s3://bucket@region/prefix/`,
 * or a backup URL (`<target>?backup=B&volume=V`, `?volume=V`, `?backingImage=N`),
 * read offline and lazily, byte for byte as Longhorn's restore would.
 * Data roots given after it provide backing images (backing-roots.ts).
 * The format: ../shared/longhorn-backupstore.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, describeErrno } from '../../errors';
import type { SourceKind, SourceOptions } from '../catalog';
import type { BackupstoreCatalog } from './catalog';
import type { VolumeEntry } from './listing';
import { isBackupTarget, parseTargetArg, refuseUrlConflicts } from './url';

export const source: SourceKind = {
  kind: 'backupstore',
  detect: isBackupTarget,
  open: openBackupstore,
};

/**
 * Opens one backup target (`args[0]`): lists its volumes (or only the one a
 * backup URL names), loads every volume.cfg and backup cfg and the
 * backing-image cfgs; the other args are data roots that provide backing
 * images (their backing-images/ is listed). Reads no block. With
 * `opts.lazy` (the mount) and no volume named, only the volume names and
 * the backing-image cfgs: each volume is loaded when its directory is first
 * listed (BackupstoreCatalog.expand). Throws ChainfsError (one line) when
 * the target or a data root cannot be read.
 */
export async function openBackupstore(args: string[], opts: SourceOptions): Promise<BackupstoreCatalog> {
  // Loaded here, not at the top: every command detects kinds (isBackupTarget), few open a target.
  const { checkNotInSource, sourcePlaces } = await import('../../materialize/output');
  const { scanBackingRoots } = await import('./backing-roots');
  const { BackupstoreCatalog } = await import('./catalog');
  const { LIST_JOBS, deletionLockWarning, listVolumeNames, loadBackingImages, loadVolume, mapLimit } = await import('./listing');
  const { openTarget } = await import('./target');
  const arg = parseTargetArg(args[0]);
  refuseUrlConflicts(arg.label, arg, opts);
  const rootWarnings: string[] = [];
  const roots = args.slice(1).map((r) => path.resolve(r));
  const copies = scanBackingRoots(args.slice(1), rootWarnings);
  const target = await openTarget(arg.location, arg.label, opts.jobs);
  try {
    const warnings: string[] = [...rootWarnings];
    if (opts.cacheDir !== undefined) {
      // Sources are never written: not even a cache inside the target directory or a data root.
      checkNotInSource(opts.cacheDir, sourcePlaces([...(target.localDir ? [target.localDir] : []), ...roots]), 'the block cache (--cache-dir)');
      const why = cacheDirProblem(opts.cacheDir);
      if (why) {
        warnings.push(`--cache-dir ${opts.cacheDir}: ${why}; the on-disk block cache is off (blocks are cached in memory only)`);
        opts = { ...opts, cacheDir: undefined };
      }
    }
    const skipped: string[] = [];
    const jobs = Math.max(opts.jobs ?? LIST_JOBS, 2);
    const only = arg.volume ?? opts.volume; // a URL's ?volume= or --volume: list that volume only
    const names = only !== undefined ? [only]
      : arg.backingImage !== undefined ? []
        : await listVolumeNames(target, jobs, skipped);
    for (const s of skipped) warnings.push(`${target.where(s)}: not a volume directory Longhorn would list (skipped)`);
    const lazy = opts.lazy === true && only === undefined;
    const volumes: VolumeEntry[] = lazy ? names.map((name) => ({ name, unlisted: true, backups: [] }))
      : await mapLimit(names, jobs, (n) => loadVolume(target, n, jobs));
    for (const v of volumes) {
      if (only !== undefined && !v.cfg && v.backups.length === 0) {
        throw new ChainfsError(arg.label, `no volume ${v.name} in the backup target (${v.problem ?? 'no volume.cfg'})`);
      }
      if (v.problem) warnings.push(`volume ${v.name}: ${v.problem}`);
    }
    const locks = lazy ? [] : await mapLimit(volumes, jobs, (v) => deletionLockWarning(target, v.name));
    for (const w of locks) if (w) warnings.push(w);
    // A named volume or backing image: only the backing images it needs.
    const biNames = arg.backingImage !== undefined ? [arg.backingImage]
      : only !== undefined ? volumes.map((v) => v.cfg?.backingImageName).filter((n): n is string => !!n)
        : undefined;
    const backingImages = await loadBackingImages(target, biNames, jobs);
    if (arg.backingImage !== undefined && !backingImages[0]?.cfg) {
      throw new ChainfsError(arg.label, `no backing-image backup ${arg.backingImage} in the backup target (${backingImages[0]?.problem ?? 'missing'})`);
    }
    return new BackupstoreCatalog(arg, target, volumes, backingImages, warnings, opts, { roots, copies });
  } catch (e) {
    target.close();
    throw e;
  }
}

/**
 * Why the on-disk cache cannot live in `dir`, or undefined when it can: it
 * is (or can be created as) a directory this process may write. Creating it
 * is what the cache's first write would do anyway; nothing else is written.
 */
function cacheDirProblem(dir: string): string | undefined {
  try {
    makeDirs(path.resolve(dir));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EEXIST' || err.code === 'ENOTDIR') {
      const p = existingNonDir(dir);
      return p === path.resolve(dir) ? 'is not a directory' : `${p} is not a directory`;
    }
    return `cannot be created (${describeErrno(err)})`;
  }
  try {
    if (!fs.statSync(dir).isDirectory()) return 'is not a directory';
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    return `cannot be written (${describeErrno(e as NodeJS.ErrnoException)})`;
  }
  return undefined;
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdirSync spins forever
 * where mkdir fails with ENOENT under an existing parent (/proc/x).
 */
function makeDirs(dir: string): void {
  try {
    fs.mkdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && fs.statSync(dir).isDirectory()) return;
    if (code !== 'ENOENT' || path.dirname(dir) === dir || fs.existsSync(path.dirname(dir))) throw e;
    makeDirs(path.dirname(dir));
    fs.mkdirSync(dir);
  }
}

/** `dir` itself or the ancestor of it that exists and is not a directory (what mkdir -p ran into). */
function existingNonDir(dir: string): string {
  for (let p = path.resolve(dir); path.dirname(p) !== p; p = path.dirname(p)) {
    try {
      if (!fs.statSync(p).isDirectory()) return p;
    } catch {
      // not there: look higher
    }
  }
  return path.resolve(dir);
}
