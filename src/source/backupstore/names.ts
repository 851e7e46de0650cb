/**
 * Where things live in a backup target: the key of every file Longhorn
 * writes, relative to the target's root (a directory, or an S3 prefix).
 *
 * Layout (longhorn/backupstore `config.go` getVolumePath, `util.go`
 * getBlockFilePath, `backupbackingimage/config.go`):
 *   backupstore/volumes/XX/YY/<volume>/volume.cfg          XX/YY = sha512(volume)[0:2],[2:4]
 *   backupstore/volumes/XX/YY/<volume>/backups/backup_<b>.cfg
 *   backupstore/volumes/XX/YY/<volume>/blocks/AA/BB/<checksum>.blk
 *   backupstore/backing-images/backing-images/<bi>/backing-image.cfg
 *   backupstore/backing-images/blocks/AA/BB/<checksum>.blk  (one pool for all backing images)
 */
import { createHash } from 'node:crypto';

export const BASE = 'backupstore';
export const VOLUMES = `${BASE}/volumes/`;
export const BACKING_IMAGES = `${BASE}/backing-images/backing-images/`;
export const BACKING_IMAGE_BLOCKS = `${BASE}/backing-images/blocks/`;

/** Longhorn's DEFAULT_BLOCK_SIZE (`types.go`): 2 MiB. */
export const DEFAULT_BLOCK_SIZE = 2 << 20;

/**
 * Names Longhorn accepts for volumes, backups and listed files
 * (`util.ValidateName`, `util/util.go`); others are skipped when listing.
 */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** A block checksum: the first 64 hex chars of SHA-512 (`util.GetChecksum`). */
export const CHECKSUM_RE = /^[0-9a-f]{64}$/;

/** `util.GetChecksum`: hex(sha512(s))[0:64]. */
export function longhornChecksum(data: string | Buffer): string {
  return createHash('sha512').update(data).digest('hex').slice(0, 64);
}

/** `volumes/XX/YY/<volume>/` (with the trailing slash). */
export function volumeDir(volume: string): string {
  const c = longhornChecksum(volume);
  return `${VOLUMES}${c.slice(0, 2)}/${c.slice(2, 4)}/${volume}/`;
}

export function volumeCfgKey(volume: string): string {
  return `${volumeDir(volume)}volume.cfg`;
}

export function backupsDir(volume: string): string {
  return `${volumeDir(volume)}backups/`;
}

export function backupCfgKey(volume: string, backup: string): string {
  return `${backupsDir(volume)}backup_${backup}.cfg`;
}

/** The block pool of a volume: `volumes/XX/YY/<volume>/blocks/`. */
export function volumeBlocksDir(volume: string): string {
  return `${volumeDir(volume)}blocks/`;
}

export function backingImageCfgKey(name: string): string {
  return `${BACKING_IMAGES}${name}/backing-image.cfg`;
}

/** `<pool>AA/BB/<checksum>.blk` for a pool directory ending in '/'. */
export function blockKey(pool: string, checksum: string): string {
  return `${pool}${checksum.slice(0, 2)}/${checksum.slice(2, 4)}/${checksum}.blk`;
}

/** The backup name of a `backup_<name>.cfg` file name, or undefined (`util.ExtractNames`). */
export function backupNameOfFile(file: string): string | undefined {
  const m = /^backup_(.+)\.cfg$/.exec(file);
  return m && NAME_RE.test(m[1]) ? m[1] : undefined;
}
