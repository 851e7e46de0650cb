/**
 * The backing images of a node: every `backing-images/<name>-<uuid>/` on
 * every given root, copies of one image (the same directory name on several
 * disks) taken as one, and which replicas use each (by the directory their
 * BackingFilePath names; the engine never looks at `backing.cfg`'s `name`,
 * which changed meaning across BIM versions, longhorn-node.md A.5).
 */
import type { BackingDirEntry, RootScan } from './scan';

export interface BackingCopy {
  root: string;
  path: string;
  /** The `backing` file, when there is one. */
  file?: string;
  size?: number;
  allocatedBytes?: number;
  /** backing.cfg `currentChecksum` (SHA-512 hex), when recorded. */
  checksum?: string;
  virtualSize?: number;
  problems: string[];
}

export interface NodeBackingImage {
  /** `<name>-<uuid>`. */
  dir: string;
  name: string;
  uuid: string;
  /** Name in the mount tree: `name`, or `dir` when two images share a name. */
  id: string;
  copies: BackingCopy[];
  /** Directory names (replica ids) of the replicas whose BackingFilePath names this image. */
  usedBy: string[];
  /** Why the copies do not agree (sizes, recorded checksums), if they do not. */
  mismatch?: string;
}

/** Groups the roots' backing-image directories; `users` maps `<name>-<uuid>` to replica ids. */
export function indexBackingImages(roots: RootScan[], users: Map<string, string[]>): NodeBackingImage[] {
  const byDir = new Map<string, NodeBackingImage>();
  for (const root of roots) {
    for (const d of root.backingDirs) {
      let bi = byDir.get(d.dir);
      if (!bi) {
        bi = { dir: d.dir, name: d.name, uuid: d.uuid, id: d.name, copies: [], usedBy: users.get(d.dir) ?? [] };
        byDir.set(d.dir, bi);
      }
      bi.copies.push(copyOf(root, d));
    }
  }
  const list = [...byDir.values()].sort((a, b) => (a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0));
  const names = new Map<string, number>();
  for (const bi of list) names.set(bi.name, (names.get(bi.name) ?? 0) + 1);
  for (const bi of list) {
    if ((names.get(bi.name) ?? 0) > 1) bi.id = bi.dir;
    bi.mismatch = mismatch(bi.copies);
  }
  return list;
}

function copyOf(root: RootScan, d: BackingDirEntry): BackingCopy {
  const c: BackingCopy = { root: root.path, path: d.path, problems: [...d.problems] };
  if (d.file !== undefined) c.file = d.file;
  if (d.size !== undefined) c.size = d.size;
  if (d.allocatedBytes !== undefined) c.allocatedBytes = d.allocatedBytes;
  if (d.cfg?.currentChecksum) c.checksum = d.cfg.currentChecksum;
  if (d.cfg?.virtualSize) c.virtualSize = d.cfg.virtualSize;
  if (d.cfg?.size !== undefined && d.size !== undefined && d.cfg.size !== d.size) {
    c.problems.push(`backing.cfg says size ${d.cfg.size}, the file has ${d.size} bytes`);
  }
  return c;
}

function mismatch(copies: BackingCopy[]): string | undefined {
  const withFile = copies.filter((c) => c.size !== undefined);
  const sizes = new Set(withFile.map((c) => c.size));
  const sums = new Set(copies.filter((c) => c.checksum).map((c) => c.checksum));
  const why: string[] = [];
  if (sizes.size > 1) why.push(`sizes differ (${withFile.map((c) => `${c.size} on ${c.root}`).join(', ')})`);
  if (sums.size > 1) why.push('the recorded checksum (backing.cfg currentChecksum) differs between copies');
  return why.length ? `copies disagree: ${why.join('; ')}; the copy on the first root that has one is served` : undefined;
}

/** The copy a view serves: the first (in root order) with a `backing` file and no problem, else the first with a file. */
export function servedCopy(bi: NodeBackingImage): BackingCopy | undefined {
  return bi.copies.find((c) => c.file && c.problems.length === 0) ?? bi.copies.find((c) => c.file);
}
