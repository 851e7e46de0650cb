/**
 * What a backup-target argument names: a local directory (a mounted NFS/CIFS
 * share or a copy), `vfs:///path`, or `s3://bucket@region/prefix/`, each
 * optionally with Longhorn's backup-URL query (`?backup=B&volume=V`,
 * `?volume=V`, `?backingImage=NAME`: `EncodeBackupURL`, `backupstore.go`;
 * `backupbackingimage/config.go`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError } from '../../errors';
import { BASE } from './names';

/** Where a target lives. */
export type TargetLocation =
  | { kind: 'dir'; dir: string }
  | { kind: 's3'; bucket: string; region?: string; prefix: string };

export interface TargetArg {
  location: TargetLocation;
  /** What the query of a backup URL selects. */
  volume?: string;
  backup?: string;
  backingImage?: string;
  /** The argument as given, for messages. */
  label: string;
}

/** A backup URL's query, if the argument has one. */
function splitQuery(arg: string): [string, URLSearchParams | undefined] {
  const q = arg.indexOf('?');
  if (q < 0) return [arg, undefined];
  return [arg.slice(0, q), new URLSearchParams(arg.slice(q + 1))];
}

/** The query keys of Longhorn's backup URLs, and the option that selects the same. */
const URL_KEYS = [['volume', '--volume'], ['backup', '--backup'], ['backingImage', '--backing-image']] as const;

/**
 * Refuses a query chainfs would not read as asked: a key Longhorn's URLs do
 * not have (`?backups=B`, a typo, would otherwise give the volume's last
 * backup) or a key given twice.
 */
function checkQuery(arg: string, query: URLSearchParams): void {
  const known: readonly string[] = URL_KEYS.map(([k]) => k);
  for (const key of new Set(query.keys())) {
    if (!known.includes(key)) throw new ChainfsError(arg, `unknown backup-URL parameter "${key}" (Longhorn's are ${known.join(', ')})`);
    if (query.getAll(key).length > 1) throw new ChainfsError(arg, `backup-URL parameter "${key}" is given twice`);
  }
}

/**
 * Refuses an option that names another volume, backup or backing image than
 * the backup URL's query (`URL?backup=B1` with `--backup B2`): one of them
 * would be silently ignored.
 */
export function refuseUrlConflicts(label: string, url: { volume?: string; backup?: string; backingImage?: string },
  opts: { volume?: string; backup?: string; backingImage?: string }): void {
  for (const [key, flag] of URL_KEYS) {
    const a = url[key];
    const b = opts[key];
    if (a !== undefined && b !== undefined && a !== b) {
      throw new ChainfsError(label, `the URL selects ${key}=${a} and ${flag} says ${b}: give one of them`);
    }
  }
}

/** `scheme://...`: a URL, as Longhorn's backup target settings spell them. */
const URL_RE = /^([a-z][a-z0-9+.-]*):\/\//i;

/**
 * Whether `arg` is a backup target (cheap: a URL scheme, a query, or one stat).
 * Any other `scheme://` argument is claimed too unless it names an existing
 * local path (which the other source kinds, all local, may claim): no other
 * kind reads URLs, so an unknown scheme (azblob://, Longhorn's Azure driver)
 * is refused by name here instead of read as a replica directory "azblob:".
 */
export function isBackupTarget(arg: string): boolean {
  if (/^(s3|vfs|nfs|cifs|azblob):\/\//i.test(arg)) return true;
  if (URL_RE.test(arg) && !fs.existsSync(arg)) return true;
  const [base, query] = splitQuery(arg);
  if (query && (query.has('backup') || query.has('volume') || query.has('backingImage'))) return true;
  return targetRoot(base) !== undefined;
}

/**
 * The target directory for a local path: the path itself when it holds
 * `backupstore/`, or its parent when the user named `backupstore/` itself.
 */
function targetRoot(p: string): string | undefined {
  const isDir = (d: string) => {
    try {
      return fs.statSync(d).isDirectory();
    } catch {
      return false;
    }
  };
  const dir = path.resolve(p);
  if (isDir(path.join(dir, BASE))) return dir;
  if (path.basename(dir) === BASE && (isDir(path.join(dir, 'volumes')) || isDir(path.join(dir, 'backing-images')))) {
    return path.dirname(dir);
  }
  return undefined;
}

/**
 * Parses a target argument. Throws ChainfsError for `nfs://`/`cifs://`
 * (chainfs does not mount shares: the user mounts it and passes the
 * directory), for `azblob://` and any other scheme it does not read (by
 * name), and for malformed URLs. A local path that merely looks like a URL
 * (`dir://x` existing) is a directory.
 */
export function parseTargetArg(arg: string): TargetArg {
  const [base, query] = splitQuery(arg);
  if (query) checkQuery(arg, query);
  const sel = {
    volume: query?.get('volume') ?? undefined,
    backup: query?.get('backup') ?? undefined,
    backingImage: query?.get('backingImage') ?? undefined,
  };
  const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/is.exec(base);
  const known = m && /^(s3|vfs|nfs|cifs|azblob)$/i.test(m[1]);
  if (!m || (!known && fs.existsSync(base))) return { location: { kind: 'dir', dir: targetRoot(base) ?? path.resolve(base) }, ...sel, label: arg };
  const scheme = m[1].toLowerCase();
  const rest = m[2];
  if (scheme === 'nfs' || scheme === 'cifs') {
    throw new ChainfsError(arg, `chainfs does not mount ${scheme.toUpperCase()} shares itself: mount the share `
      + `read-only (e.g. mount -t ${scheme === 'nfs' ? 'nfs -o ro server:/export' : 'cifs -o ro //server/share'} /mnt/backups) `
      + 'and pass the directory that holds backupstore/');
  }
  if (scheme === 'vfs') {
    if (!rest.startsWith('/')) throw new ChainfsError(arg, 'a vfs:// target needs an absolute path (vfs:///path)');
    return { location: { kind: 'dir', dir: targetRoot(rest) ?? path.resolve(rest) }, ...sel, label: arg };
  }
  if (scheme === 's3') {
    // s3://bucket@region/prefix/ (s3/s3_service.go newService): the user part is the bucket.
    const slash = rest.indexOf('/');
    const host = slash < 0 ? rest : rest.slice(0, slash);
    const prefix = (slash < 0 ? '' : rest.slice(slash + 1)).replace(/^\/+/, '');
    const at = host.indexOf('@');
    const bucket = decodeURIComponent(at < 0 ? host : host.slice(0, at));
    const region = at < 0 ? undefined : decodeURIComponent(host.slice(at + 1)) || undefined;
    if (!bucket) throw new ChainfsError(arg, 'an s3:// target needs a bucket (s3://bucket@region/prefix/)');
    const norm = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
    return { location: { kind: 's3', bucket, region, prefix: norm }, ...sel, label: arg };
  }
  if (scheme === 'azblob') {
    // Longhorn's Azure Blob driver (backupstore azblob/azblob.go): chainfs has no Azure client.
    throw new ChainfsError(arg, 'azblob:// backup targets are not read by chainfs: copy the container to a directory '
      + "(e.g. azcopy copy 'https://ACCOUNT.blob.core.windows.net/CONTAINER/backupstore' DIR --recursive) and pass DIR");
  }
  throw new ChainfsError(arg, `${scheme}:// backup targets are not read by chainfs (unknown scheme; chainfs reads a directory, vfs:// or s3://)`);
}
