/**
 * Finding the backing image of a replica offline.
 *
 * volume.meta's BackingFilePath is the path as the replica process saw it,
 * `/host<disk>/backing-images/<name>-<uuid>/backing`. Offline we try, in order:
 * the path given by the user; that path without `/host`; the path as written;
 * and `<data root>/backing-images/<name>-<uuid>/backing` next to the replica
 * (the data root is the replica directory's grandparent), so a copied
 * `/var/lib/longhorn` tree just works. The engine also accepts a directory
 * holding exactly one file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError } from '../errors';

export interface BackingLocation {
  path: string;
  /** Every candidate looked at, for the error message and `inspect`. */
  tried: string[];
}

export function backingCandidates(replicaDir: string, recorded: string): string[] {
  const out: string[] = [];
  const add = (p: string) => { if (!out.includes(p)) out.push(p); };
  const rel = path.isAbsolute(recorded) ? recorded : path.resolve(replicaDir, recorded);
  if (recorded.startsWith('/host/')) add(recorded.slice('/host'.length));
  add(rel);
  // <data root>/backing-images/<dir of the recorded file>/<file>
  const dataRoot = path.dirname(path.dirname(path.resolve(replicaDir)));
  const biDir = path.basename(path.dirname(rel));
  if (biDir && biDir !== '/' && biDir !== '.') add(path.join(dataRoot, 'backing-images', biDir, path.basename(rel)));
  return out;
}

/** Resolves the backing image; throws a ChainfsError listing every path tried. */
export function locateBacking(replicaDir: string, recorded: string, override?: string): BackingLocation {
  if (override) {
    const p = resolveFileOrSingleFileDir(override);
    if (!p) throw new ChainfsError(override, 'backing file (--backing-file) does not exist or is not a file');
    return { path: p, tried: [override] };
  }
  const tried = backingCandidates(replicaDir, recorded);
  for (const c of tried) {
    const p = resolveFileOrSingleFileDir(c);
    if (p) return { path: p, tried };
  }
  throw new ChainfsError(path.join(replicaDir, 'volume.meta'),
    `backing image ${JSON.stringify(recorded)} not found (tried: ${tried.join(', ')}); pass --backing-file PATH`);
}

function resolveFileOrSingleFileDir(p: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return undefined;
  }
  if (st.isFile()) return p;
  if (st.isDirectory()) {
    const entries = fs.readdirSync(p).filter((e) => !e.endsWith('.cfg'));
    if (entries.length === 1) {
      const one = path.join(p, entries[0]);
      return fs.statSync(one).isFile() ? one : undefined;
    }
  }
  return undefined;
}
