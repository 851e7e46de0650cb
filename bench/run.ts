/**
 * `make bench [SIZE=4G]`: generates (or reuses) the workload, checks that
 * chainfs's view equals the expected flat image, runs every row against
 * its anchors, prints the markdown table and writes it to
 * bench/results/<date>-<size>.md (every value in .json beside it). Mounts, daemons and scratch data are
 * removed on exit, also on SIGINT; the generated workload stays cached
 * under /var/tmp/chainfs-bench for the next run (--clean removes it).
 *
 * Options: --size 4G  --seed 1  --runs 3  --fio-runtime S (10, or 5 below
 * 4 GiB)  --only export,cat,read,cold,scale  --root DIR  --clean
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeMachine, type Machine } from './machine';
import { type LayerPlan, SHAPE, MiB, bytesOf } from './plan';
import { Cleanup, lastLine, remove, sh } from './proc';
import { clearDeadRuns, commonOptions, projectRoot } from './report';
import { ensureScaleWorkload, SCALE_LAYERS } from './scale';
import { type Group, type Suite, GROUPS, catRows, coldRows, exportRows, q, readRows, scaleRows } from './suite';
import { type Row, type Verdict, renderRows } from './table';
import { type Workload, ensureWorkload } from './workload';

const GiB = 1024 ** 3;

interface Options {
  size: number;
  label: string;
  seed: number;
  runs: number;
  fioRuntime: number;
  groups: Set<Group>;
  root: string;
  clean: boolean;
}

function options(argv: string[]): Options {
  const o = commonOptions(argv, ['clean']);
  const groups = new Set<Group>(o.only ? o.only.map((g) => g as Group) : GROUPS);
  for (const g of groups) if (!GROUPS.includes(g)) throw new Error(`--only: unknown group ${g} (groups: ${GROUPS.join(', ')})`);
  return {
    size: o.size, label: o.label, seed: o.seed, runs: o.runs,
    fioRuntime: o.fioRuntime ?? (o.size >= 4 * GiB ? 10 : 5),
    groups, root: o.root, clean: o.flags.clean,
  };
}

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

/** Keeps the disk bounded: only the workload of this run (and the scale chain) stay cached. */
function dropOtherWorkloads(root: string, keep: string[]): void {
  for (const e of fs.readdirSync(root)) {
    // backup.ts's workload of the same size and seed stays too (v2.ts keeps its disk inside this one's).
    if (/^run-\d+$/.test(e) || keep.includes(e) || keep.includes(e.replace(/^backup-/, ''))) continue;
    log(`removing the cached workload ${e} (only the latest one is kept)`);
    remove(path.join(root, e));
  }
}

function freeBytes(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

function pct(n: number, of: number): string {
  return `${((100 * n) / of).toFixed(1)}%`;
}

function describeWorkload(w: Workload, o: Options): string {
  const p = w.plan;
  const layer = (l: LayerPlan) => `${l.extents.length} extents, ${pct(bytesOf(l.extents), p.size)}, ` +
    `${l.extents.filter((e) => e.zero).length} of them zeros`;
  return [
    `${o.label} volume (seed ${o.seed}): a raw backing image ${pct(bytesOf(p.backing.extents), p.size)} filled in scattered 1 MiB extents; `,
    `three sparse layers of ${SHAPE.minExtent / 1024} KiB–${SHAPE.maxExtent / MiB} MiB extents, some of them allocated zeros `,
    `(${p.layers.map((l) => `${l.file}: ${layer(l)}`).join('; ')}). `,
    'The same chain as qcow2 files (64 KiB clusters) with backing files, written by qemu-io with the same bytes; ',
    '`flat.raw` = `qemu-img convert -O raw top.qcow2`, checked equal to `chainfs cat` before anything was timed. ',
    `Scale: a 2 TiB volume, ${SCALE_LAYERS} sparse layers (the head included) of 3 extents each, no backing image.`,
  ].join('');
}

function markdown(o: Options, m: Machine, w: Workload, cold: string | undefined, rows: Row[]): { text: string; verdicts: Verdict[] } {
  const { markdown: table, verdicts } = renderRows(rows);
  const missed = verdicts.filter((v) => !v.met);
  const text = [
    `# chainfs benchmark: ${o.label}, ${m.date.slice(0, 10)}`,
    '',
    `- **Machine:** ${m.cores} × ${m.cpu}, ${m.memory} RAM, ${m.kernel}, ${m.filesystem} under ${o.root}; load average (1, 5, 15 min) at start ${m.load}`,
    `- **Software:** Node ${m.node}, qemu ${m.qemu}, ${m.fio}, ${m.openssl}; chainfs ${m.chainfs}`,
    `- **Date:** ${m.date}`,
    `- **Workload:** ${describeWorkload(w, o)}`,
    `- **Method:** each measure runs once to warm up (its output checked against flat.raw where it writes or serves one), then ${o.runs} times` +
    ` (the 2 TiB rows ${Math.max(5, o.runs)} times), a row's measures taking turns run by run: median and min–max. Page cache warm unless a row says cold` +
    `${cold === undefined ? '' : cold === 'drop_caches' ? ' (cold: `sync; echo 3 > /proc/sys/vm/drop_caches`, a fresh mount or daemon)'
      : ' (cold: posix_fadvise DONTNEED on every source file, as drop_caches is not permitted here; a fresh mount or daemon)'}.` +
    ' Exports start from an empty output after `sync`; anchors that write a file end with `sync FILE`, since `chainfs export` fsyncs.' +
    ` First reads through FUSE get a fresh mount (or daemon) each run; fio runs ${o.fioRuntime} s per run.` +
    ' GB/s and MB are decimal; rate = volume size / time.',
    '- **chainfs ratio:** how chainfs compares to that anchor, higher is better for chainfs (anchor time / chainfs time; chainfs rate / anchor rate).',
    '',
    table,
    '',
    missed.length
      ? `Targets missed (${missed.length} of ${verdicts.length}):\n${missed.map((v) => `- ${v.row}, ${v.what}: ${v.detail}`).join('\n')}`
      : `All ${verdicts.length} targets met.`,
    '',
  ].join('\n');
  return { text, verdicts };
}

async function main(): Promise<void> {
  const o = options(process.argv.slice(2));
  const root = projectRoot();
  const chainfs = path.join(root, 'bin', 'chainfs');
  const cleanup = new Cleanup();
  cleanup.installSignalHandlers();

  fs.mkdirSync(o.root, { recursive: true });
  o.root = fs.realpathSync(o.root); // chainfs names its daemons by the real mount point path
  clearDeadRuns(o.root);
  const label = o.label;
  const cachedDir = path.join(o.root, `${label}-${o.seed}`);
  const need = (fs.existsSync(path.join(cachedDir, 'stamp.json')) ? 2.2 : 4.5) * o.size;
  if (freeBytes(o.root) < need) {
    throw new Error(`${o.root} has ${(freeBytes(o.root) / GiB).toFixed(1)} GiB free; a ${label} run needs about ${(need / GiB).toFixed(1)} GiB`);
  }
  const runDir = path.join(o.root, `run-${process.pid}`);
  fs.mkdirSync(runDir);
  cleanup.add('remove the run directory', () => remove(runDir));
  const cachedDirs: string[] = [];
  if (o.clean) {
    cleanup.add('remove the cached workloads (--clean)', () => {
      for (const d of cachedDirs) remove(d);
      if (fs.existsSync(o.root) && fs.readdirSync(o.root).length === 0) fs.rmdirSync(o.root);
    });
  }

  const machine = describeMachine(root, o.root);
  log(`${o.label}, seed ${o.seed}, ${o.runs} runs, groups ${[...o.groups].join(',')}; load average ${machine.load}`);
  if (os.loadavg()[0] > 0.5) log(`warning: the machine is busy (load ${machine.load}): timings will be noisy`);

  let partialDir: string | null = null;
  const undoPartial = cleanup.add('remove a partly generated workload', () => { if (partialDir) remove(partialDir); });
  const { workload, cached } = await ensureWorkload(o.root, label, o.size, o.seed, log, (d) => { partialDir = d; });
  const { scale } = ensureScaleWorkload(o.root, o.seed, log);
  undoPartial();
  cachedDirs.push(workload.dir, scale.dir);
  dropOtherWorkloads(o.root, [path.basename(workload.dir), path.basename(scale.dir)]);
  if (cached) log(`reusing the cached workload in ${workload.dir}`);

  log('checking that `chainfs cat` equals flat.raw');
  const verified = await sh(`${q(chainfs)} cat ${q(workload.replica)} | cmp - ${q(workload.flat)}`, { stdout: 'pipe' });
  if (verified.code !== 0) {
    throw new Error(`chainfs's view differs from flat.raw, nothing was timed: ${lastLine(verified.stdout || verified.stderr)}`);
  }

  const suite: Suite = { chainfs, workload, scale, runDir, runs: o.runs, fioRuntime: o.fioRuntime, cleanup, log };
  const rows: Row[] = [];
  if (o.groups.has('export')) rows.push(...(await exportRows(suite)));
  if (o.groups.has('cat')) rows.push(...(await catRows(suite)));
  if (o.groups.has('read')) rows.push(...(await readRows(suite)));
  if (o.groups.has('cold')) rows.push(...(await coldRows(suite)));
  if (o.groups.has('scale')) rows.push(...(await scaleRows(suite)));

  machine.load += `; at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`;
  const { text } = markdown(o, machine, workload, suite.coldMethod, rows);
  const resultsDir = path.join(root, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${machine.date.slice(0, 10)}-${label}.md`);
  fs.writeFileSync(file, text);
  // Every value, not only medians: for comparing runs later.
  const raw = { machine, size: o.size, seed: o.seed, runs: o.runs, fioRuntime: o.fioRuntime, cold: suite.coldMethod ?? null, rows };
  fs.writeFileSync(file.replace(/\.md$/, '.json'), `${JSON.stringify(raw, null, 1)}\n`);
  process.stdout.write(`\n${text}`);
  log(`written to ${path.relative(process.cwd(), file) || file}`);
}

main().then(() => process.exit(0), (e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).message}\n`);
  process.exit(1);
});
