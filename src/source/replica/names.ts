/**
 * Longhorn's file names in a replica directory (longhorn-engine
 * pkg/util/disk/constant.go). Every name read from metadata is checked here
 * before it is joined to a path: a plain file name, no `/`, no `..`.
 */
export const VOLUME_META = 'volume.meta';
export const META_SUFFIX = '.meta';
export const SNAP_PREFIX = 'volume-snap-';
export const IMG_SUFFIX = '.img';

const HEAD_RE = /^volume-head-\d+\.img$/;
const SNAP_RE = /^volume-snap-(.+)\.img$/;

/** The engine refuses longer chains (types.MaximumTotalSnapshotCount; the head counts). */
export const MAX_CHAIN_LENGTH = 250;

export function isHeadFile(name: string): boolean {
  return HEAD_RE.test(name);
}

export function isSnapshotFile(name: string): boolean {
  return SNAP_RE.test(name) && isPlainName(name);
}

/** A disk file name the engine could have written: a head or a snapshot. */
export function isDiskFile(name: string): boolean {
  return isHeadFile(name) || isSnapshotFile(name);
}

/** `volume-snap-NAME.img` -> `NAME`; undefined for anything else. */
export function snapshotName(file: string): string | undefined {
  const m = SNAP_RE.exec(file);
  return m ? m[1] : undefined;
}

export function snapshotFile(name: string): string {
  return `${SNAP_PREFIX}${name}${IMG_SUFFIX}`;
}

/** True for a single path component that cannot climb out of a directory. */
export function isPlainName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && name !== '.' && name !== '..' &&
    !name.includes('/') && !name.includes('\0');
}
