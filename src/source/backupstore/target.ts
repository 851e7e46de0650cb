/**
 * A backup target as chainfs reads it: objects by key (relative to the
 * target's root, `backupstore/...`), GET and one-level LIST only. Two kinds:
 * a local directory (dir-target.ts) and S3 (s3-target.ts). Nothing here can
 * write, lock or delete.
 */
import { DirTarget } from './dir-target';
import type { TargetLocation } from './url';

/** One level of a listing: sub-"directories" and files, names only. */
export interface Listing {
  dirs: string[];
  files: { name: string; mtime?: Date }[];
}

export interface BackupTarget {
  /** The target as the user named it. */
  readonly label: string;
  /** The local directory of a directory target (a root no output may be written into). */
  readonly localDir?: string;
  /** True for S3: every read is a request. */
  readonly remote: boolean;
  /** Parallel requests that pay off by default (--jobs overrides). */
  readonly defaultJobs: number;
  /**
   * The object's bytes. Throws TargetMissing when it does not exist, and a
   * ChainfsError naming the object for any other failure, or when it is
   * larger than `maxBytes` (nothing of it read then: `tooLarge`).
   */
  get(key: string, maxBytes?: number): Promise<Buffer>;
  /**
   * The object's first `bytes` bytes (all of it when shorter) and its whole
   * size: one ranged GET. Throws like `get`.
   */
  head(key: string, bytes: number): Promise<{ data: Buffer; size: number }>;
  /** One level under `prefix` (ending in '/'); an absent prefix lists as empty. */
  list(prefix: string): Promise<Listing>;
  /** Every object key under `prefix`, however deep (S3: no delimiter, 1,000 keys a request). */
  listAll(prefix: string): Promise<string[]>;
  /** Where `key` is, for messages (a path, or s3://bucket/key). */
  where(key: string): string;
  close(): void;
}

/**
 * The largest cfg chainfs parses: the longest string V8 can hold (Node 20
 * on 64 bits: 2^29 - 24 characters, ~512 MiB; a backup cfg of ~5 million
 * blocks, ~10 TiB of written data). Longhorn itself has no such limit.
 */
export const MAX_CFG_BYTES: number = (require('node:buffer') as typeof import('node:buffer')).constants.MAX_STRING_LENGTH;

/** The one-line reason an object of `size` bytes over `maxBytes` is not read. */
export function tooLarge(size: number, maxBytes: number): string {
  return `is ${size} bytes, more than any Longhorn cfg chainfs can read (${maxBytes} bytes at most): not read`;
}

/** The object does not exist (ENOENT, NoSuchKey): a missing block, a deleted cfg. */
export class TargetMissing extends Error {
  readonly key: string;
  constructor(key: string, where: string) {
    super(`${where}: no such object`);
    this.key = key;
  }
}

/**
 * Opens the target a location names. The S3 SDK is loaded only for S3 (a
 * dynamic import: a directory target does not pay for it).
 */
export async function openTarget(loc: TargetLocation, label: string, jobs?: number): Promise<BackupTarget> {
  if (loc.kind === 'dir') return new DirTarget(loc.dir, label);
  const { S3Target } = await import('./s3-target');
  return new S3Target(loc, label, jobs);
}
