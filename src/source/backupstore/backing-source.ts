/**
 * Where a backup's backing image comes from, decided once per volume when
 * the target is opened (so that inspect says it and a view opens it):
 *
 *   1. `--backing-file PATH`: the user's explicit choice, never second-guessed;
 *   2. a copy on a data root given after the target
 *      (`<root>/backing-images/<name>-<uuid>/backing`, see backing-roots.ts);
 *   3. the target's own backing-image backup (`backing-images/<name>/`).
 *
 * A local copy beats the target's backup: it costs no download, and when its
 * backing.cfg checksum equals volume.cfg `BackingImageChecksum` both hold
 * the same bytes (both are Longhorn's SHA-512 of the image,
 * longhorn-backupstore.md 1.9). Copies whose recorded checksum disagrees
 * with the volume's, or with each other's, are refused: which one the
 * backup was made over cannot be told, and a wrong base is silent damage.
 * A copy whose checksum cannot be compared (no backing.cfg checksum, or a
 * volume.cfg that records none) is used only when the target holds no
 * usable backup of the image (whose blocks are checksummed), and then with
 * a warning; a copy whose size differs from the target's backup of it is
 * never used. Files are not hashed: backing.cfg's checksum is what Longhorn
 * wrote.
 */
import { isDirectory } from '../../files';
import type { VolumeCfg } from './cfg';
import type { RootBackingCopy } from './backing-roots';
import type { BackingImageEntry } from './listing';

/** Where the backing image of a volume's backups is read from. */
export type BackingSource =
  | { from: 'backing-file'; file: string }
  | { from: 'data-root'; file: string; root: string; checksum?: string; copies: string[]; verified: boolean }
  | { from: 'target'; entry: BackingImageEntry; notUsed?: string }
  | { from: 'no-backing' }
  | { from: 'unresolved'; problem: string };

/** What `resolveBacking` needs besides the volume. */
export interface BackingContext {
  /** Where the volume's volume.cfg is, for messages. */
  volumeCfg: string;
  backingFile?: string;
  noBacking?: boolean;
  /** Data roots given after the target (resolved paths), in order. */
  roots: string[];
  copies: RootBackingCopy[];
  targetEntry(name: string): BackingImageEntry | undefined;
}

/**
 * The options, for the error of a backing image that cannot be found or
 * used; `roots` says what the data roots given hold of it.
 */
export function backingOptions(name: string, roots: string): string {
  return `pass --backing-file PATH (the image, raw or qcow2), or a data root holding backing-images/${name}-<uuid>/ after the target `
    + `(chainfs cat TARGET /var/lib/longhorn; ${roots}), or --no-backing for the backup blocks over zeros as Longhorn restores to a file`;
}

/**
 * The backing source of `volume`'s backups, or undefined when its
 * volume.cfg names no backing image. Never throws: what cannot be used is
 * `unresolved` with the one-line problem opening a backup will throw.
 */
export function resolveBacking(volume: string, cfg: VolumeCfg, ctx: BackingContext): BackingSource | undefined {
  const name = cfg.backingImageName;
  if (!name) return undefined;
  if (ctx.noBacking) return { from: 'no-backing' };
  if (ctx.backingFile) {
    if (isDirectory(ctx.backingFile)) {
      return { from: 'unresolved', problem: `--backing-file ${ctx.backingFile} is a directory; --backing-file takes the image file; `
        + `a data root goes after the target: chainfs cat TARGET ${ctx.backingFile}` };
    }
    return { from: 'backing-file', file: ctx.backingFile };
  }
  const entry = ctx.targetEntry(name);
  const targetOk = entry && !entry.problem ? entry : undefined;
  const want = cfg.backingImageChecksum.toLowerCase();
  // A copy that cannot be checked by checksum must at least have the size of the target's backup of it.
  const mine = ctx.copies.filter((c) => c.name === name).map((c) => (want && c.checksum ? c : sizeChecked(c, targetOk)));
  const local = fromRoots(volume, ctx.volumeCfg, name, want, mine);
  if (local && (local.from !== 'data-root' || local.verified || !targetOk)) return local;
  if (targetOk) {
    const notUsed = local?.from === 'data-root'
      ? `${local.file} not used: its checksum cannot be compared (${local.checksum ? 'volume.cfg records none' : 'no checksum in its backing.cfg'}); the target's backup is checked block by block`
      : mine.find((c) => c.file && c.problem)?.problem;
    return { from: 'target', entry: targetOk, ...(notUsed ? { notUsed } : {}) };
  }
  const roots = ctx.roots.length === 0 ? 'none given'
    : mine.length === 0 ? `not on ${ctx.roots.join(', ')}`
      : `no usable copy: ${mine.map((c) => c.problem).join('; ')}`;
  // A named volume loads its backing image's cfg by name (listing.ts): absent, it is `<cfg>: missing`.
  const absent = !entry || (!entry.cfg && entry.problem!.endsWith(': missing'));
  const why = absent ? `has backing image ${name}, which has no backup in this target` : `needs backing image ${name}: ${entry.problem}`;
  return { from: 'unresolved', problem: `volume ${volume} ${why}; ${backingOptions(name, roots)}` };
}

/** `c`, or `c` with a problem when its size differs from the target's backup of the image. */
function sizeChecked(c: RootBackingCopy, target: BackingImageEntry | undefined): RootBackingCopy {
  const want = target?.cfg?.size;
  if (c.problem || c.size === undefined || !want || c.size === want) return c;
  return { ...c, problem: `${c.file} has ${c.size} bytes, but the target's backup of backing image ${c.name} has ${want} (a copy cut short or another image)` };
}

/**
 * The data roots' copy of `name`, undefined when none is usable. Copies
 * with a recorded checksum must agree with `want` (when known) and with
 * each other; the first usable one (root order) is served, one with a
 * recorded checksum before one without.
 */
function fromRoots(volume: string, volumeCfg: string, name: string, want: string, mine: RootBackingCopy[]): BackingSource | undefined {
  const usable = mine.filter((c) => c.file && !c.problem);
  if (usable.length === 0) return undefined;
  if (want) {
    const bad = usable.find((c) => c.checksum && c.checksum !== want);
    if (bad) {
      return { from: 'unresolved', problem: `backing image ${name}: ${bad.file} has checksum ${bad.checksum} (its backing.cfg), `
        + `but volume ${volume} was backed up over checksum ${want} (BackingImageChecksum in ${volumeCfg}): another image under the same name; ${backingOptions(name, 'one whose copy matches')}` };
    }
  }
  const known = usable.filter((c) => c.checksum);
  const other = known.find((c) => c.checksum !== known[0].checksum);
  if (other) {
    return { from: 'unresolved', problem: `backing image ${name}: the copies on the data roots differ: ${known[0].file} has checksum `
      + `${known[0].checksum}, ${other.file} has ${other.checksum} (backing.cfg), and volume ${volume} records none to choose by (${volumeCfg}); ${backingOptions(name, 'only the root whose copy is right')}` };
  }
  const pick = known[0] ?? usable[0];
  return {
    from: 'data-root', file: pick.file!, root: pick.root, checksum: pick.checksum,
    copies: [pick, ...usable.filter((c) => c !== pick)].map((c) => c.file!), verified: !!want && !!pick.checksum,
  };
}

/** The JSON of a backing source (docs/json.md, inspect-backupstore `backingImageSource`). */
export function backingSourceReport(s: BackingSource | undefined): object | null {
  if (!s) return null;
  switch (s.from) {
    case 'backing-file': return { from: s.from, file: s.file };
    case 'data-root': return { from: s.from, file: s.file, root: s.root, checksum: s.checksum ?? null, copies: s.copies, checksumMatches: s.verified };
    case 'target': return { from: s.from, path: `backing-images/${s.entry.name}.img`, ...(s.notUsed ? { notUsed: s.notUsed } : {}) };
    case 'no-backing': return { from: s.from };
    default: return { from: s.from, problem: s.problem };
  }
}

/** One line for inspect's text: where the backing image comes from. */
export function describeBackingSource(name: string, s: BackingSource): string {
  switch (s.from) {
    case 'backing-file': return `backing image ${name}: from --backing-file ${s.file}`;
    case 'data-root': {
      const more = s.copies.length > 1 ? `; also on ${s.copies.slice(1).join(', ')}, none of them with another checksum` : '';
      const check = s.verified ? 'checksum matches volume.cfg' : 'checksum not compared (not recorded on both sides) and no backup of it in the target: check the image yourself';
      return `backing image ${name}: from data root ${s.root}: ${s.file} (${check}${more})`;
    }
    case 'target': return `backing image ${name}: from the target's backing-image backup backing-images/${s.entry.name}.img${s.notUsed ? ` (${s.notUsed})` : ''}`;
    case 'no-backing': return `backing image ${name}: not used (--no-backing)`;
    default: return `backing image ${name}: unresolved: ${s.problem}`;
  }
}
