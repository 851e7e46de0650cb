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
import { ChainfsError, describeErrno } from '../../errors';
import { fileKind } from './files';

export interface BackingLocation {
  path: string;
  /** Every candidate looked at, for the error message and `inspect`. */
  tried: string[];
}

export function backingCandidates(replicaDir: string, recorded: string, roots: string[] = []): string[] {
  const out: string[] = [];
  const add = (p: string) => { if (!out.includes(p)) out.push(p); };
  const rel = path.isAbsolute(recorded) ? recorded : path.resolve(replicaDir, recorded);
  if (recorded.startsWith('/host/')) add(recorded.slice('/host'.length));
  add(rel);
  // <data root>/backing-images/<dir of the recorded file>/<file>
  const dataRoot = path.dirname(path.dirname(path.resolve(replicaDir)));
  // The recorded path names the file (`.../backing-images/<dir>/backing`) or,
  // as the engine also accepts, the directory itself (`.../backing-images/<dir>`).
  const names = path.basename(path.dirname(rel)) === 'backing-images'
    ? [path.basename(rel)] : [path.join(path.basename(path.dirname(rel)), path.basename(rel))];
  for (const n of names) {
    if (n.startsWith('/') || n.startsWith('.')) continue;
    add(path.join(dataRoot, 'backing-images', n));
    // A node's other disks: the same <name>-<uuid> directory on any given root.
    for (const r of roots) add(path.join(path.resolve(r), 'backing-images', n));
  }
  return out;
}

/** Resolves the backing image; throws a ChainfsError listing every path tried. */
export function locateBacking(replicaDir: string, recorded: string, override?: string, roots: string[] = []): BackingLocation {
  if (override) {
    const p = resolveFileOrSingleFileDir(override);
    if (typeof p !== 'string') throw new ChainfsError(override, `backing file (--backing-file) ${p.reason}`);
    return { path: realPath(p), tried: [override] };
  }
  const tried = backingCandidates(replicaDir, recorded, roots);
  const why: string[] = [];
  for (const c of tried) {
    const p = resolveFileOrSingleFileDir(c);
    if (typeof p === 'string') return { path: realPath(p), tried };
    why.push(p.reason === NOT_FOUND ? c : `${c} (${p.reason})`);
  }
  throw new ChainfsError(path.join(replicaDir, 'volume.meta'),
    `backing image ${JSON.stringify(recorded)} not found (tried: ${why.join(', ')}); pass --backing-file PATH`);
}

const NOT_FOUND = 'does not exist';

/**
 * The backing image lives outside the replica directory and the engine
 * follows links to it (a copied tree may well link it into place), so a
 * link is resolved here, once; the file itself is then opened like every
 * other one, read-only and without following links.
 */
function realPath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p; // gone meanwhile: opening it will say so
  }
}

/** The file at `p`, or the one file of directory `p`; otherwise why not (not found, permission denied, a FIFO, ...). */
function resolveFileOrSingleFileDir(p: string): string | { reason: string } {
  const st = statOrReason(p);
  if (!(st instanceof fs.Stats)) return st;
  if (st.isFile()) return p;
  if (!st.isDirectory()) return { reason: `is ${fileKind(st)}, not a regular file` };
  let entries: string[];
  try {
    entries = fs.readdirSync(p).filter((e) => !e.endsWith('.cfg'));
  } catch (e) {
    return { reason: `cannot list directory: ${describeErrno(e as NodeJS.ErrnoException)}` };
  }
  if (entries.length !== 1) return { reason: `is a directory with ${entries.length} files besides .cfg (expected exactly one)` };
  const one = path.join(p, entries[0]);
  const st1 = statOrReason(one);
  if (!(st1 instanceof fs.Stats)) return { reason: `${entries[0]}: ${st1.reason}` };
  return st1.isFile() ? one : { reason: `${entries[0]} is ${fileKind(st1)}, not a regular file` };
}

function statOrReason(p: string): fs.Stats | { reason: string } {
  try {
    return fs.statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { reason: code === 'ENOENT' || code === 'ENOTDIR' ? NOT_FOUND : describeErrno(e as NodeJS.ErrnoException) };
  }
}
