/**
 * Writes Longhorn data roots (longhorn-node.md A) for tests: a
 * `longhorn-disk.cfg` of any manager version (or none), replica directories
 * `replicas/<volume>-<8 chars>/` built by the replica builder (real holes,
 * engine-exact metadata), `revision.counter` as the engine writes it,
 * volume.meta flags (Rebuilding, Error), head mtimes to the nanosecond,
 * backing images on any root with `backing.cfg` of any BIM version, and
 * noise: directories that are not replicas, files under `tmp/`.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildReplica, type BuiltReplica, type Scenario } from './replica-builder';
import { encodeVolumeMeta, writeMetaFile, type VolumeMeta } from './replica-meta';

export type CfgShape = 'v0.8' | 'v1.7' | 'v1.11' | 'none';
export type BackingCfgShape = 'v1.1' | 'v1.2' | 'v1.3' | 'v1.7' | 'v1.8';

export interface NodeReplicaSpec {
  /** The 8 characters after `<volume>-`. */
  id: string;
  /** The replica's history (its name is the volume name). */
  scenario: Scenario;
  /** revision.counter: a number, raw text (a corrupt file), or absent (undefined). */
  revisionCounter?: number | string;
  /** The head file's mtime in ns since the epoch, set last (after every write). */
  headMtimeNs?: bigint;
  /** volume.meta Error. */
  error?: string;
  /** Root indexes that get a copy of its backing image (default: its own root). */
  backingOn?: number[];
  backingCfg?: BackingCfgShape;
}

export interface NodeRootSpec {
  cfg: CfgShape;
  diskUUID: string;
  diskName?: string;
  replicas: NodeReplicaSpec[];
  /** Adds noise: a directory and a file under replicas/ that are not replicas, two files under tmp/. */
  noise?: boolean;
}

export interface BuiltNodeReplica extends BuiltReplica {
  /** Directory name `<volume>-<id>`. */
  name: string;
  /** Its data root. */
  nodeRoot: string;
  /** The head file's path. */
  headPath: string;
}

export interface BuiltNode {
  roots: string[];
  /** By directory name. */
  replicas: Map<string, BuiltNodeReplica>;
}

/** Where volume.meta says the backing image is: a path of the original node, not of this machine. */
export const ORIGINAL_DISK = '/var/lib/longhorn';

export function buildNode(specs: NodeRootSpec[], tmp: string, name = 'node'): BuiltNode {
  const base = fs.mkdtempSync(path.join(path.resolve(tmp), `${name}-`));
  const scratch = path.join(base, '.scratch');
  fs.mkdirSync(scratch);
  const roots = specs.map((s, i) => {
    const root = path.join(base, `disk${i + 1}`);
    fs.mkdirSync(path.join(root, 'replicas'), { recursive: true });
    if (s.cfg !== 'none') fs.writeFileSync(path.join(root, 'longhorn-disk.cfg'), diskCfg(s));
    return root;
  });
  const replicas = new Map<string, BuiltNodeReplica>();
  const mtimes: [string, bigint][] = [];
  specs.forEach((s, i) => {
    for (const r of s.replicas) {
      const built = buildReplica(r.scenario, scratch);
      const dirName = `${r.scenario.name}-${r.id}`;
      const dir = path.join(roots[i], 'replicas', dirName);
      if (fs.existsSync(dir)) throw new Error(`${dir} exists twice in the spec`);
      fs.renameSync(built.dir, dir);
      let backingPath: string | undefined;
      if (built.backingPath) {
        const biDir = path.dirname(built.backingPath);
        for (const target of r.backingOn ?? [i]) {
          const to = path.join(roots[target], 'backing-images', path.basename(biDir));
          fs.mkdirSync(path.dirname(to), { recursive: true });
          // GNU tar would keep holes too; cp --sparse=always would not be exact, so copy by extents.
          if (!fs.existsSync(to)) execFileSync('cp', ['-a', '--sparse=auto', biDir, to]);
          if (r.backingCfg) rewriteBackingCfg(path.join(to, 'backing.cfg'), r.backingCfg);
          backingPath ??= path.join(to, 'backing');
        }
      }
      const meta = JSON.parse(fs.readFileSync(path.join(dir, 'volume.meta'), 'utf8')) as VolumeMeta;
      if (built.backingPath) meta.BackingFilePath = `/host${ORIGINAL_DISK}/backing-images/${path.basename(path.dirname(built.backingPath))}/backing`;
      if (r.error !== undefined) meta.Error = r.error;
      writeMetaFile(path.join(dir, 'volume.meta'), encodeVolumeMeta(meta));
      if (r.revisionCounter !== undefined) writeRevisionCounter(dir, r.revisionCounter);
      const headPath = path.join(dir, meta.Head);
      if (r.headMtimeNs !== undefined) mtimes.push([headPath, r.headMtimeNs]);
      replicas.set(dirName, { ...built, dir, root: roots[i], nodeRoot: roots[i], name: dirName, headPath, ...(backingPath ? { backingPath } : {}) });
    }
    if (s.noise) addNoise(roots[i]);
  });
  for (const [p, ns] of mtimes) setMtimeNs(p, ns);
  fs.rmSync(scratch, { recursive: true, force: true });
  return { roots, replicas };
}

/** Go json.Marshal of the manager's disk config struct, every shape (no trailing newline). */
function diskCfg(s: NodeRootSpec): string {
  const name = JSON.stringify(s.diskName ?? 'default-disk-1');
  switch (s.cfg) {
    case 'v0.8': return `{"diskUUID":"${s.diskUUID}"}`;
    case 'v1.7': return `{"diskName":${name},"diskUUID":"${s.diskUUID}","diskDriver":""}`;
    case 'v1.11': return `{"diskName":${name},"diskUUID":"${s.diskUUID}","diskDriver":"","state":"ready"}`;
    default: throw new Error(`no cfg for ${s.cfg}`);
  }
}

/** The engine's revision.counter: 4096 bytes, the decimal text then NULs. */
function writeRevisionCounter(dir: string, v: number | string): void {
  const buf = Buffer.alloc(4096);
  buf.write(String(v), 'latin1');
  fs.writeFileSync(path.join(dir, 'revision.counter'), buf, { mode: 0o600 });
}

/** backing.cfg with the keys of an older BIM (longhorn-node.md A.5), values kept. */
function rewriteBackingCfg(file: string, shape: BackingCfgShape): void {
  const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const keys: Record<BackingCfgShape, string[]> = {
    'v1.1': ['name', 'uuid', 'size', 'url'],
    'v1.2': ['name', 'uuid', 'size', 'expectedChecksum', 'currentChecksum'],
    'v1.3': ['name', 'uuid', 'size', 'expectedChecksum', 'currentChecksum', 'modificationTime'],
    'v1.7': ['name', 'uuid', 'size', 'virtualSize', 'expectedChecksum', 'currentChecksum', 'modificationTime'],
    'v1.8': ['name', 'uuid', 'size', 'virtualSize', 'realSize', 'expectedChecksum', 'currentChecksum', 'modificationTime'],
  };
  const out: Record<string, unknown> = {};
  for (const k of keys[shape]) out[k] = k === 'url' ? 'https://example.invalid/image.raw' : c[k];
  if (shape === 'v1.1' || shape === 'v1.2') out.name = path.basename(path.dirname(file)).replace(/-[^-]+$/, '');
  fs.writeFileSync(file, JSON.stringify(out));
}

function addNoise(root: string): void {
  fs.mkdirSync(path.join(root, 'replicas', 'lost+found'));
  fs.mkdirSync(path.join(root, 'replicas', 'not-a-replica'));
  fs.writeFileSync(path.join(root, 'replicas', 'notes.txt'), 'an operator was here\n');
  fs.mkdirSync(path.join(root, 'tmp'), { recursive: true });
  fs.writeFileSync(path.join(root, 'tmp', 'bi-export-1a2b3c4d.tmp'), Buffer.alloc(8192, 1));
  fs.writeFileSync(path.join(root, 'tmp', 'bi-export-1a2b3c4d.tmp.cfg'), '{"name":"bi-export"}');
  for (const d of ['engine-binaries', '.lock', 'unix-domain-socket']) fs.mkdirSync(path.join(root, d), { recursive: true });
}

/**
 * Sets a file's mtime to the nanosecond with `touch -m -d @S.NNNNNNNNN`
 * (fs.utimes takes a double: only about microseconds at today's dates)
 * and checks that the file system kept every digit.
 */
export function setMtimeNs(file: string, ns: bigint): void {
  const s = ns / 1_000_000_000n;
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  execFileSync('touch', ['-m', '-h', '-d', `@${s}.${frac}`, file]);
  const got = fs.lstatSync(file, { bigint: true }).mtimeNs;
  if (got !== ns) throw new Error(`${file}: the file system stored mtime ${got}, not ${ns} (no ns timestamps?)`);
}

/** Head allocated bytes (st_blocks*512) as the file system reports them. */
export function allocatedBytes(file: string): number {
  return fs.lstatSync(file).blocks * 512;
}
