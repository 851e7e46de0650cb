/**
 * `make bench`'s rows for issue #13's "Performance": mounted reads of a v2
 * replica view against the same anchors as the v1 rows (run.ts), on the
 * same content.
 *
 * The v2 disk (<root>/<size>-<seed>/v2/disk.img, cached beside the v1
 * workload it is made from) is written by the tests' SPDK blobstore writer
 * (test/helpers/spdk-builder.ts) as Longhorn's v2 engine lays out a replica
 * on a backing image: a backing-image lvol `bi-bench-disk-<lvs uuid>` (a
 * snapshot, as Longhorn prepares it through a `-temp-head`), the replica's
 * head cloned from it, and snapshots `s1`, `s2` taken between the v1
 * workload's layers. Each lvol's allocated 1 MiB clusters are the clusters
 * its v1 layer touches, holding the chain's content at that layer (as
 * SPDK's copy-on-write leaves them), read from the v1 workload's files; so
 * the head, `volumes/bench-v2/volume.img`, equals flat.raw (checked with
 * `chainfs cat` before anything is timed).
 *
 * Rows: `dd bs=1M` (a fresh mount or daemon each run), fio 4 KiB random
 * reads with O_DIRECT, 1 and 4 jobs: the v2 view, qemu-storage-daemon's FUSE
 * export of top.qcow2 (the v1 rows' anchor), and flat.raw. Targets (#13):
 * the v1 views' ratios, >= 1.5x qemu-storage-daemon for dd, >= 1x for fio.
 * Writes bench/results/<date>-<size>-v2.md and .json.
 *
 *   node dist/bench/bench/v2.js [--size 4G] [--runs 3] [--seed 1] [--fio-runtime 5]
 *     [--root /var/tmp/chainfs-bench]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MiB, SpdkDiskBuilder } from '../test/helpers/spdk-builder';
import { describeMachine } from './machine';
import { ChainfsMount, QsdExport } from './mounts';
import type { LayerPlan } from './plan';
import { Cleanup, lastLine, remove, sh } from './proc';
import { clearDeadRuns, commonOptions, needSpace, projectRoot, writeReport } from './report';
import { FIO_WARMUP_S, dd, fio, measureRow, q, sameBytes } from './suite';
import type { Row } from './table';
import { type Workload, ensureWorkload } from './workload';

/** Bump when the disk would differ for the same v1 workload. */
const GENERATOR = 1;
export const V2_VOLUME = 'bench-v2';
export const V2_REPLICA = `${V2_VOLUME}-r-0a1b2c3d`;
const LVS_UUID = '5c1e7a52-0000-4000-8000-00000000be2c';
/** fio seconds per run for these rows (the v1 rows use 10 s at 4 GiB): keeps the rows within their time budget. */
const FIO_RUNTIME_S = 4;

const started = Date.now();
/** Progress on stderr, with the seconds since the start (the rows' time budget). */
const log = (msg: string) => process.stderr.write(`bench [${((Date.now() - started) / 1000).toFixed(0)} s]: ${msg}\n`);

/** The 1 MiB clusters a layer's extents touch, ascending. */
function clustersOf(l: LayerPlan): number[] {
  const set = new Set<number>();
  for (const e of l.extents) for (let c = Math.floor(e.offset / MiB); c * MiB < e.offset + e.length; c++) set.add(c);
  return [...set].sort((a, b) => a - b);
}

interface Placed {
  /** Device cluster. */
  dc: number;
  /** Volume cluster. */
  c: number;
  /** Chain level whose content it holds: 0 the backing image, 1.. the v1 layers. */
  level: number;
}

/** Cluster `c` of the chain as it reads at `level` (0: the backing image alone), from the v1 workload's files. */
function clusterAt(w: Workload, fds: number[], c: number, level: number): Buffer {
  const buf = Buffer.alloc(MiB);
  fs.readSync(fds[0], buf, 0, MiB, c * MiB);
  const lo = c * MiB;
  const hi = lo + MiB;
  for (let i = 0; i < level; i++) {
    for (const e of w.plan.layers[i].extents) {
      const s = Math.max(e.offset, lo);
      const t = Math.min(e.offset + e.length, hi);
      if (s < t) fs.readSync(fds[i + 1], buf, s - lo, t - s, s);
    }
  }
  return buf;
}

function stampOf(w: Workload): string {
  return `${JSON.stringify({ generator: GENERATOR, size: w.plan.size, seed: w.plan.seed })}\n`;
}

/** The v2 disk of this v1 workload: built unless cached. Returns its path. */
export function ensureV2Disk(w: Workload): string {
  const dir = path.join(w.dir, 'v2');
  const file = path.join(dir, 'disk.img');
  const stamp = path.join(dir, 'stamp.json');
  if (fs.existsSync(file) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === stampOf(w)) return file;
  remove(dir);
  fs.mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
  log(`building the v2 disk in ${dir}`);
  const size = w.plan.size;
  const baseClusters = w.plan.backing.extents.map((e) => {
    if (e.offset % MiB || e.length !== MiB) throw new Error('the backing image extents are not whole 1 MiB clusters');
    return e.offset / MiB;
  });
  const layerClusters = w.plan.layers.map(clustersOf);
  const allocated = baseClusters.length + layerClusters.reduce((a, l) => a + l.length, 0);
  const b = new SpdkDiskBuilder({ clusters: allocated + Math.ceil(allocated / 128) + 64, lvsName: 'disk-bench', lvsUuid: LVS_UUID });
  const placed: Placed[] = [];
  const allocate = (id: number, cs: number[], level: number) => {
    for (const c of cs) {
      b.allocateZero(id, c);
      placed.push({ dc: b.blob(id).clusters[c], c, level });
    }
  };
  // Longhorn prepares a backing image in a -temp-head, snapshots it under the image's name and deletes the temp head.
  const biName = `bi-bench-disk-${LVS_UUID}`;
  const temp = b.create(`${biName}-temp-head`, size);
  allocate(temp, baseClusters, 0);
  const bi = b.snapshot(temp, biName, {
    longhorn_backing_image_checksum: 'bench', longhorn_backing_image_uuid: '1f2e3d4c', longhorn_backing_image_prepare_state: 'ready',
  });
  b.delete(temp);
  const head = b.clone(bi, V2_REPLICA);
  layerClusters.forEach((cs, i) => {
    allocate(head, cs, i + 1);
    if (i < layerClusters.length - 1) {
      b.snapshot(head, `${V2_REPLICA}-snap-s${i + 1}`, { user_created: 'true', snapshot_timestamp: `2026-08-20T0${9 + i}:00:00Z` });
    }
  });
  b.build(file);
  // The clusters' data, written where the builder placed them (it keeps none: allocateZero).
  const fds = [w.backing, ...w.plan.layers.map((l) => path.join(w.replica, l.file))].map((f) => fs.openSync(f, 'r'));
  const out = fs.openSync(file, 'r+');
  try {
    for (const p of placed) fs.writeSync(out, clusterAt(w, fds, p.c, p.level), 0, MiB, p.dc * MiB);
    fs.fsyncSync(out);
  } finally {
    fs.closeSync(out);
    for (const fd of fds) fs.closeSync(fd);
  }
  fs.writeFileSync(stamp, stampOf(w));
  log(`  built: ${placed.length} clusters in ${b.blobs.size} lvols (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return file;
}

async function main(): Promise<void> {
  const o = commonOptions(process.argv.slice(2));
  if (o.only) throw new Error('--only: v2.js has one group');
  const root = projectRoot();
  const chainfs = path.join(root, 'bin', 'chainfs');
  const cleanup = new Cleanup();
  cleanup.installSignalHandlers();
  fs.mkdirSync(o.root, { recursive: true });
  o.root = fs.realpathSync(o.root);
  clearDeadRuns(o.root);
  needSpace(o.root, 1.2 * o.size, `the ${o.label} v2 disk`);
  const runDir = path.join(o.root, `run-${process.pid}`);
  fs.mkdirSync(runDir);
  cleanup.add('remove the run directory', () => remove(runDir));
  const machine = describeMachine(root, o.root);
  log(`v2 disks, ${o.label}, seed ${o.seed}, ${o.runs} runs; load average ${machine.load}`);
  if (os.loadavg()[0] > 0.5) log(`warning: the machine is busy (load ${machine.load}): timings will be noisy`);

  let partial: string | null = null;
  const undo = cleanup.add('remove a partly generated workload', () => { if (partial) remove(partial); });
  const { workload: w } = await ensureWorkload(o.root, o.label, o.size, o.seed, log, (d) => { partial = d; });
  undo();
  let disk: string;
  try {
    disk = ensureV2Disk(w);
  } catch (e) {
    remove(path.join(w.dir, 'v2'));
    throw e;
  }
  log('checking that `chainfs cat` of the v2 volume equals flat.raw');
  const same = await sh(`${q(chainfs)} cat ${q(disk)} --volume ${V2_VOLUME} | cmp - ${q(w.flat)}`, { stdout: 'pipe' });
  if (same.code !== 0) throw new Error(`the v2 view differs from flat.raw, nothing was timed: ${lastLine(same.stdout || same.stderr)}`);

  const size = w.plan.size;
  const fioRuntime = o.fioRuntime ?? FIO_RUNTIME_S;
  const s = { runs: o.runs, log };
  const m = new ChainfsMount(chainfs, disk, path.join(runDir, 'mnt'), cleanup);
  const v2File = path.join(m.mountPoint, 'volumes', V2_VOLUME, 'volume.img');
  const qsd = new QsdExport(w.qcow2Top, path.join(runDir, 'qsd.img'), size, path.join(runDir, 'qsd.log'), cleanup);
  const targets = [
    { name: 'chainfs mount, v2 volume', file: v2File, fresh: async () => { await m.unmount(); await m.mount(); }, served: true },
    { name: 'qemu-storage-daemon (top.qcow2)', file: qsd.file, fresh: async () => { await qsd.stop(); await qsd.start(); }, served: true },
    { name: 'flat.raw', file: w.flat, served: false },
  ];
  const first = await measureRow(s, 'v2: first sequential read', 'GB/s', targets.map((t) => ({
    label: `${t.name}: \`dd bs=1M\``, once: () => dd(t.file, size),
    ...(t.fresh ? { before: t.fresh } : {}),
    ...(t.served ? { verify: () => sameBytes(t.file, w.flat, t.name) } : {}),
  })));
  if (!fs.existsSync(v2File)) await m.mount();
  const random = (jobs: number) => measureRow(s, `v2: fio, ${jobs} job(s)`, 'IOPS', targets.map((t) => ({
    label: `${t.name}: fio 4k randread, ${jobs} job${jobs > 1 ? 's' : ''}`,
    warmup: () => fio(t.file, jobs, FIO_WARMUP_S), once: () => fio(t.file, jobs, fioRuntime),
  })));
  const fio1 = await random(1);
  const fio4 = await random(4);
  await m.unmount();
  await qsd.stop();

  const rows: Row[] = [
    { title: 'v2 mounted: sequential read', subject: first[0], anchors: [{ line: first[1], target: 1.5 }, { line: first[2], note: 'page cache' }] },
    { title: 'v2 mounted: 4 KiB random read, 1 job', subject: fio1[0], anchors: [{ line: fio1[1], target: 1.0 }, { line: fio1[2], note: 'O_DIRECT: the disk' }] },
    { title: 'v2 mounted: 4 KiB random read, 4 jobs', subject: fio4[0], anchors: [{ line: fio4[1], target: 1.0 }, { line: fio4[2], note: 'O_DIRECT: the disk' }] },
  ];
  writeReport(root, 'v2', o.label, machine, {
    title: `v2 disks (issue #13), ${o.label}`,
    bullets: [
      `- **Workload:** the v1 rows' ${o.label} volume (seed ${o.seed}) as a Longhorn v2 replica on an SPDK lvstore (the tests' blobstore writer, 1 MiB clusters): `
      + `a backing-image lvol with the raw backing image's ${w.plan.backing.extents.length} clusters, the replica head cloned from it and snapshots s1, s2; `
      + 'each lvol allocates the clusters its v1 layer touches, holding the chain\'s content at that layer, so `volumes/bench-v2/volume.img` equals flat.raw '
      + '(checked with `chainfs cat` before anything was timed). Anchors: qemu-storage-daemon\'s FUSE export of the v1 qcow2 chain\'s top.qcow2, and flat.raw.',
      `- **Method:** each measure runs once to warm up (a served image compared with flat.raw after its first read), then ${o.runs} times, a row's measures `
      + `taking turns run by run: median and min–max. \`dd\` gets a fresh mount (or daemon) each run; fio runs ${fioRuntime} s per run (psync, O_DIRECT) on one mount. `
      + 'Page cache warm. GB/s decimal; rate = volume size / time.',
    ],
    rows,
  }, { size: o.size, seed: o.seed, runs: o.runs, fioRuntime }, log);
}

if (require.main === module) {
  main().then(() => process.exit(0), (e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
