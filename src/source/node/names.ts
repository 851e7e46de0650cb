/**
 * Names on a Longhorn data root (longhorn-node.md A): the disk's marker file,
 * its subdirectories, and the two directory-name shapes chainfs groups by.
 */

/** The file that marks a disk root (manager util/util.go `DiskConfigFile`). */
export const DISK_CFG = 'longhorn-disk.cfg';
/** One directory per v1 replica (manager util/util.go `ReplicaDirectory`). */
export const REPLICAS_DIR = 'replicas';
/** `<name>-<uuid>/` per backing image copy (BIM pkg/types `BackingImageManagerDirectoryName`). */
export const BACKING_IMAGES_DIR = 'backing-images';
/** BIM data-source work files (BIM pkg/types `DataSourceDirectoryName`). */
export const TMP_DIR = 'tmp';
/** Control-path items that live on the default disk only; never data (manager types/types.go). */
export const CONTROL_ITEMS = ['engine-binaries', '.lock', 'unix-domain-socket', 'freeze'];

/**
 * `<volume>-<8 chars>`: the manager's own orphan scan uses `.*-[a-zA-Z0-9]{8}$`
 * (util/util.go:686-706); the volume name may hold hyphens, so the greedy
 * first group splits on the last one.
 */
const REPLICA_DIR_RE = /^(.+)-([A-Za-z0-9]{8})$/;

/** The volume name of a replica directory name, or undefined when the name is not one. */
export function volumeOfReplicaDir(name: string): string | undefined {
  const m = REPLICA_DIR_RE.exec(name);
  return m ? m[1] : undefined;
}

/**
 * `<biName>-<biUUID>` of a backing-image directory: biName matches
 * `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` (BIM `ValidBackingImageName`, at most 64
 * characters) and biUUID is 8 characters (`util.RandomID()`); split on the last hyphen.
 */
const BACKING_DIR_RE = /^([a-zA-Z0-9][a-zA-Z0-9_.-]*)-([A-Za-z0-9]{8})$/;

export function parseBackingDir(name: string): { name: string; uuid: string } | undefined {
  const m = BACKING_DIR_RE.exec(name);
  return m ? { name: m[1], uuid: m[2] } : undefined;
}
