/**
 * Longhorn backup targets as a source: a directory holding `backupstore/`
 * (a mounted NFS/CIFS share or a copy), `vfs:///path`, `s3://bucket@region/prefix/`,
 * or a backup URL (`<target>?backup=B&volume=V`, `?volume=V`, `?backingImage=N`),
 * read offline and lazily, byte for byte as Longhorn's restore would.
 * The format: ../shared/longhorn-backupstore.md.
 */
import { ChainfsError } from '../../errors';
import type { SourceKind, SourceOptions } from '../catalog';
import { BackupstoreCatalog } from './catalog';
import { deletionLockWarning, listVolumeNames, loadBackingImages, loadVolume, mapLimit } from './listing';
import { openTarget } from './target';
import { isBackupTarget, parseTargetArg } from './url';

/** Parallel listing requests when opening (cfgs are small). */
const LIST_JOBS = 8;

export const source: SourceKind = {
  kind: 'backupstore',
  detect: isBackupTarget,
  open: openBackupstore,
};

/**
 * Opens one backup target: lists its volumes (or only the one a backup URL
 * names), loads every volume.cfg and backup cfg and the backing-image cfgs.
 * Reads no block. Throws ChainfsError (one line) when the target cannot be read.
 */
export async function openBackupstore(args: string[], opts: SourceOptions): Promise<BackupstoreCatalog> {
  if (args.length !== 1) throw new ChainfsError(args[1], 'give one backup target at a time');
  const arg = parseTargetArg(args[0]);
  const target = await openTarget(arg.location, arg.label, opts.jobs);
  try {
    const warnings: string[] = [];
    const skipped: string[] = [];
    const jobs = Math.max(opts.jobs ?? LIST_JOBS, 2);
    const only = arg.volume ?? opts.volume; // a URL's ?volume= or --volume: list that volume only
    const names = only !== undefined ? [only]
      : arg.backingImage !== undefined ? []
        : await listVolumeNames(target, jobs, skipped);
    for (const s of skipped) warnings.push(`${target.where(s)}: not a volume directory Longhorn would list (skipped)`);
    const volumes = await mapLimit(names, jobs, (n) => loadVolume(target, n, jobs));
    for (const v of volumes) {
      if (only !== undefined && !v.cfg && v.backups.length === 0) {
        throw new ChainfsError(arg.label, `no volume ${v.name} in the backup target (${v.problem ?? 'no volume.cfg'})`);
      }
      if (v.problem) warnings.push(`volume ${v.name}: ${v.problem}`);
    }
    const locks = await mapLimit(volumes, jobs, (v) => deletionLockWarning(target, v.name));
    for (const w of locks) if (w) warnings.push(w);
    // A named volume or backing image: only the backing images it needs.
    const biNames = arg.backingImage !== undefined ? [arg.backingImage]
      : only !== undefined ? volumes.map((v) => v.cfg?.backingImageName).filter((n): n is string => !!n)
        : undefined;
    const backingImages = await loadBackingImages(target, biNames, jobs);
    if (arg.backingImage !== undefined && !backingImages[0]?.cfg) {
      throw new ChainfsError(arg.label, `no backing-image backup ${arg.backingImage} in the backup target (${backingImages[0]?.problem ?? 'missing'})`);
    }
    return new BackupstoreCatalog(arg, target, volumes, backingImages, warnings, opts);
  } catch (e) {
    target.close();
    throw e;
  }
}
