/**
 * The benchmark's volume, written twice from one plan: as a Longhorn replica
 * directory (raw sparse backing image, two snapshots and the head, metadata
 * byte-exact as the engine writes it) and as a qcow2 chain with backing
 * files, plus the flat expected image (`qemu-img convert -O raw` of the top).
 * It is cached under /var/tmp/chainfs-bench/<size>-<seed>/ and reused when
 * its stamp names the same generator, size and seed.
 *
 * The qcow2 overlays get data exactly where the Longhorn layers have
 * allocated extents: qemu-io `write -s FILE` of the same bytes, and
 * `write -z` (a zero cluster: the same content) for allocated zeros.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeDiskMeta, encodeVolumeMeta, writeMetaFile } from '../test/helpers/replica-meta';
import { type LayerPlan, type WorkloadPlan, MiB, planWorkload } from './plan';
import { check, remove } from './proc';
import { extentBytes } from './random';

/** Bump when the generated files would differ for the same size and seed. */
const GENERATOR = 1;
const CREATED = '2024-05-01T10:00:00Z';
const VOLUME = 'bench';
/** Pattern files for one qemu-io run: bounded so scratch space stays small. */
const QEMU_IO_BATCH = 256 * MiB;

export interface Workload {
  plan: WorkloadPlan;
  /** The cache directory of this size and seed. */
  dir: string;
  /** The Longhorn replica directory (what chainfs reads). */
  replica: string;
  backing: string;
  /** Every file chainfs reads, for cold-cache runs. */
  replicaFiles: string[];
  qcow2Dir: string;
  qcow2Top: string;
  /** Every file of the qcow2 chain, for cold-cache runs. */
  qcow2Files: string[];
  /** The expected flat image: `qemu-img convert -O raw top.qcow2`. */
  flat: string;
}

export function workloadPaths(root: string, label: string, plan: WorkloadPlan): Workload {
  const dir = path.join(root, `${label}-${plan.seed}`);
  const longhorn = path.join(dir, 'longhorn');
  const replica = path.join(longhorn, 'replicas', `${VOLUME}-abcd1234`);
  const backing = path.join(longhorn, 'backing-images', `bi-${VOLUME}-1f2e3d4c`, 'backing');
  const qcow2Dir = path.join(dir, 'qcow2');
  return {
    plan, dir, replica, backing,
    replicaFiles: [backing, ...plan.layers.map((l) => path.join(replica, l.file))],
    qcow2Dir,
    qcow2Top: path.join(qcow2Dir, plan.layers[plan.layers.length - 1].qcow2),
    qcow2Files: [plan.backing, ...plan.layers].map((l) => path.join(qcow2Dir, l.qcow2)),
    flat: path.join(dir, 'flat.raw'),
  };
}

function stampOf(plan: WorkloadPlan): string {
  return `${JSON.stringify({ generator: GENERATOR, size: plan.size, seed: plan.seed, extents: plan.layers.map((l) => l.extents.length) })}\n`;
}

function isCached(w: Workload): boolean {
  try {
    if (fs.readFileSync(path.join(w.dir, 'stamp.json'), 'utf8') !== stampOf(w.plan)) return false;
  } catch {
    return false;
  }
  return [...w.replicaFiles, ...w.qcow2Files, w.flat].every((f) => fs.existsSync(f));
}

/**
 * Returns the workload of this size and seed, generating it unless a
 * matching one is cached. `partial` is told the directory to remove if
 * generation is interrupted (then null once it is complete).
 */
export async function ensureWorkload(root: string, label: string, size: number, seed: number,
  log: (msg: string) => void, partial: (dir: string | null) => void): Promise<{ workload: Workload; cached: boolean }> {
  const plan = planWorkload(size, seed);
  const w = workloadPaths(root, label, plan);
  if (isCached(w)) return { workload: w, cached: true };
  remove(w.dir);
  fs.mkdirSync(w.dir, { recursive: true });
  partial(w.dir);
  const t0 = Date.now();
  log(`generating the ${label} workload in ${w.dir} (seed ${seed})`);
  await writeReplica(w);
  log(`  Longhorn replica written (${secondsSince(t0)})`);
  await writeQcow2Chain(w);
  log(`  qcow2 chain written (${secondsSince(t0)})`);
  await check(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', w.qcow2Top, w.flat]);
  log(`  flat.raw written (${secondsSince(t0)})`);
  fs.writeFileSync(path.join(w.dir, 'stamp.json'), stampOf(plan));
  partial(null);
  return { workload: w, cached: false };
}

function secondsSince(t0: number): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}

/** Lets a pending signal be handled during long synchronous writing. */
const yieldToSignals = () => new Promise<void>((r) => setImmediate(r));

/** A sparse file of `size` bytes with the layer's extents written (zeros too: they are allocated). */
async function writeSparseLayer(file: string, size: number, layer: LayerPlan, seed: number): Promise<void> {
  const fd = fs.openSync(file, 'w', 0o644);
  try {
    fs.ftruncateSync(fd, size);
    let sinceYield = 0;
    for (const e of layer.extents) {
      const bytes = e.zero ? Buffer.alloc(e.length) : extentBytes(seed, layer.stream, e.index, e.length);
      fs.writeSync(fd, bytes, 0, bytes.length, e.offset);
      sinceYield += e.length;
      if (sinceYield >= 64 * MiB) {
        sinceYield = 0;
        await yieldToSignals();
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** What longhorn-engine v1.4.4 leaves after: create volume, write, snapshot s1, write, snapshot s2, write. */
async function writeReplica(w: Workload): Promise<void> {
  const { plan } = w;
  fs.mkdirSync(path.dirname(w.backing), { recursive: true });
  fs.mkdirSync(w.replica, { recursive: true });
  await writeSparseLayer(w.backing, plan.size, plan.backing, plan.seed);
  let parent = '';
  plan.layers.forEach((l, i) => {
    const isHead = i === plan.layers.length - 1;
    // A snapshot's .meta keeps the Name of the head it was (longhorn#13728).
    writeMetaFile(path.join(w.replica, `${l.file}.meta`), encodeDiskMeta({
      Name: isHead ? l.file : `volume-head-${String(i).padStart(3, '0')}.img`,
      Parent: parent, Removed: false, UserCreated: !isHead, Created: CREATED, Labels: isHead ? null : {},
    }));
    parent = l.file;
  });
  for (const l of plan.layers) await writeSparseLayer(path.join(w.replica, l.file), plan.size, l, plan.seed);
  const head = plan.layers[plan.layers.length - 1];
  writeMetaFile(path.join(w.replica, 'volume.meta'), encodeVolumeMeta({
    Size: plan.size, Head: head.file, Dirty: false, Rebuilding: false, Error: '',
    Parent: plan.layers[plan.layers.length - 2].file, SectorSize: 512, BackingFilePath: `/host${w.backing}`,
  }));
}

async function writeQcow2Chain(w: Workload): Promise<void> {
  const { plan } = w;
  fs.mkdirSync(w.qcow2Dir, { recursive: true });
  await check(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', w.backing, path.join(w.qcow2Dir, plan.backing.qcow2)]);
  let below = plan.backing.qcow2;
  for (const l of plan.layers) {
    const file = path.join(w.qcow2Dir, l.qcow2);
    // Relative backing names: the directory can move.
    await check(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', below, '-F', 'qcow2', file], { cwd: w.qcow2Dir });
    await writeOverlay(w, file, l);
    below = l.qcow2;
  }
}

/** The layer's extents into a qcow2 overlay, in qemu-io runs of at most QEMU_IO_BATCH bytes of pattern files. */
async function writeOverlay(w: Workload, file: string, layer: LayerPlan): Promise<void> {
  const scratch = path.join(w.dir, 'scratch');
  let cmds: string[] = [];
  let pending = 0;
  const flush = async () => {
    if (cmds.length) await check(['qemu-io', '-f', 'qcow2', '-t', 'unsafe', ...cmds, file]);
    cmds = [];
    pending = 0;
    remove(scratch);
  };
  for (const e of layer.extents) {
    if (e.zero) {
      cmds.push('-c', `write -q -z ${e.offset} ${e.length}`);
      continue;
    }
    fs.mkdirSync(scratch, { recursive: true });
    const pattern = path.join(scratch, `${e.index}.bin`);
    fs.writeFileSync(pattern, extentBytes(w.plan.seed, layer.stream, e.index, e.length));
    cmds.push('-c', `write -q -s ${pattern} ${e.offset} ${e.length}`);
    pending += e.length;
    if (pending >= QEMU_IO_BATCH) await flush();
  }
  await flush();
}
