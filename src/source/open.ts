/**
 * Which kind of source an argument is, and opening it as a Catalog.
 *
 * Every kind lives in src/source/<kind>/index.ts and exports `source: SourceKind`;
 * it is loaded only when asked (a command's start does not pay for the S3
 * SDK or the blobstore parser). The first kind whose `detect` says yes for
 * the first argument opens them all; a replica directory is the fallback, so
 * that a path that is nothing gets the replica reader's own one-line error,
 * as before.
 *
 * One mix of kinds is allowed: a backup target first, then data roots that
 * provide its volumes' backing images (`chainfs cat TARGET /var/lib/longhorn`).
 */
import { ChainfsError } from '../errors';
import type { Catalog, SourceKind, SourceOptions } from './catalog';

/** Most specific first: a URL scheme or a magic number before a directory's shape. */
const KINDS: (() => SourceKind)[] = [
  () => (require('./backupstore/index') as typeof import('./backupstore/index')).source,
  () => (require('./node/index') as typeof import('./node/index')).source,
  () => (require('./spdk/index') as typeof import('./spdk/index')).source,
  () => (require('./replica/index') as typeof import('./replica/index')).source,
];

/** Registered kinds, for messages and for the replica fallback. */
export function sourceKinds(): SourceKind[] {
  return KINDS.map((k) => k());
}

/**
 * Opens `args` (paths or URLs, at least one) as one catalog. All must be of
 * the same kind, except data roots after a backup target. Throws
 * ChainfsError with one line when they are not, or when the source cannot
 * be opened.
 */
export async function openSource(args: string[], opts: SourceOptions): Promise<Catalog> {
  if (args.length === 0) throw new ChainfsError(undefined, 'no source given');
  const kinds = sourceKinds();
  const kindOf = (a: string) => kinds.find((k) => k.kind !== 'replica' && k.detect(a)) ?? kinds.find((k) => k.kind === 'replica')!;
  const kind = kindOf(args[0]);
  if (kind.kind === 'backupstore' && args.length > 1) {
    const { isBackingRoot } = require('./backupstore/backing-roots') as typeof import('./backupstore/backing-roots');
    for (const a of args.slice(1)) {
      if (!isBackingRoot(a)) {
        const k = kindOf(a).kind;
        const what = k === 'backupstore' ? 'another backup target' : k === 'replica' ? 'not a Longhorn data root' : `a ${k} source`;
        throw new ChainfsError(a, `is ${what}; after a backup target give only data roots (directories holding backing-images/) that provide its backing images`);
      }
    }
    return kind.open(args, opts);
  }
  for (const a of args.slice(1)) {
    const k = kindOf(a);
    if (k.kind !== kind.kind) {
      const hint = k.kind === 'backupstore' && kind.kind === 'node' ? ' (or the backup target first, then the data roots that hold its backing images)' : '';
      throw new ChainfsError(a, `is a ${k.kind} source, but ${args[0]} is a ${kind.kind} source; give sources of one kind at a time${hint}`);
    }
  }
  return kind.open(args, opts);
}
