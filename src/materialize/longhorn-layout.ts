/**
 * Longhorn's backing-image directory, as the backing-image-manager writes it
 * (longhorn-format.md §1.10): `<disk>/backing-images/<name>-<uuid>/` holding
 * `backing` and `backing.cfg`. The manager trusts the cfg's checksum only if
 * its modificationTime is exactly Go's `Time.UTC().String()` of the file's
 * current mtime, so that string is built to the nanosecond.
 */
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { ChainfsError } from '../errors';

export const BACKING_FILE = 'backing';
export const BACKING_CFG = 'backing.cfg';

/** backing-image-manager's ValidBackingImageName. */
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
const MAX_NAME = 64;
/** The 8-character id the manager appends (util.RandomID: the head of a UUID, lowercase hex). */
const UUID_SUFFIX_RE = /^(.+)-([0-9a-f]{8})$/;

/**
 * The mode of `backing`: the manager creates its files with
 * `os.OpenFile(tmpFilePath, os.O_RDWR|os.O_CREATE, 0666)` under the usual
 * umask 022 (longhorn/backing-image-manager pkg/sync/sync_file.go,
 * IdleTimeoutCopyToFile), so they are 0644: world-readable, as the engine
 * and the other disks' managers that copy them expect.
 */
export const BACKING_MODE = 0o644;

/** `out` with a new `-<8 hex>` suffix when its last component has none (else `out` itself). */
export function withUuidSuffix(out: string): string {
  const trimmed = out.replace(/\/+$/, '');
  if (UUID_SUFFIX_RE.test(path.basename(path.resolve(trimmed)))) return out;
  return `${trimmed}-${crypto.randomUUID().slice(0, 8)}`;
}

export interface BackingImageDir {
  /** The backing image name (OUT's name without `-<uuid>`). */
  name: string;
  uuid: string;
  /** The uuid was not in OUT's name and was made up. */
  generated: boolean;
  /** `name` as the manager's container sees the file: /data/backing-images/<OUT's name>/backing. */
  containerPath: string;
}

/** Splits and validates OUT's directory name `<name>-<uuid>` (or `<name>`, with a new uuid). */
export function parseBackingImageDir(out: string): BackingImageDir {
  const base = path.basename(path.resolve(out));
  const m = UUID_SUFFIX_RE.exec(base);
  const name = m ? m[1] : base;
  if (name.length > MAX_NAME || !NAME_RE.test(name)) {
    throw new ChainfsError(out, `${JSON.stringify(name)} is not a valid backing image name: ` +
      `Longhorn wants at most ${MAX_NAME} characters matching ${NAME_RE.source} ` +
      '(name the directory <name>-<8-character uuid>, e.g. ubuntu-2404-3a7c1d2e)');
  }
  return {
    name,
    uuid: m ? m[2] : crypto.randomUUID().slice(0, 8),
    generated: !m,
    containerPath: `/data/backing-images/${base}/${BACKING_FILE}`,
  };
}

export interface BackingCfg {
  name: string;
  uuid: string;
  size: number;
  virtualSize: number;
  realSize: number;
  expectedChecksum: string;
  currentChecksum: string;
  modificationTime: string;
}

/** backing.cfg's content: Go's json.Marshal of SyncingFileConfig (these keys, this order, no newline). */
export function encodeBackingCfg(c: BackingCfg): string {
  const ordered: BackingCfg = {
    name: c.name,
    uuid: c.uuid,
    size: c.size,
    virtualSize: c.virtualSize,
    realSize: c.realSize,
    expectedChecksum: c.expectedChecksum,
    currentChecksum: c.currentChecksum,
    modificationTime: c.modificationTime,
  };
  // Go escapes <, > and & in strings; our values never hold them (checked names, hex, digits).
  return JSON.stringify(ordered);
}

/**
 * Go's `t.UTC().String()` for a time in nanoseconds since the epoch:
 * `2006-01-02 15:04:05.999999999 +0000 UTC`, the fraction without trailing
 * zeros and omitted when zero.
 */
export function goTimeString(ns: bigint): string {
  const billion = 1_000_000_000n;
  let secs = ns / billion;
  let frac = ns % billion;
  if (frac < 0n) { // floor division for times before 1970
    frac += billion;
    secs -= 1n;
  }
  const d = new Date(Number(secs) * 1000);
  const p2 = (n: number) => String(n).padStart(2, '0');
  const date = `${String(d.getUTCFullYear()).padStart(4, '0')}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}`;
  const time = `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
  const fraction = frac === 0n ? '' : `.${frac.toString().padStart(9, '0').replace(/0+$/, '')}`;
  return `${date} ${time}${fraction} +0000 UTC`;
}
