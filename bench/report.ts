/**
 * What the issue scripts of `make bench` (backup.ts, v2.ts) share with
 * run.ts: the size option, the checkout they were built from, their common
 * options, and the report file each writes beside run.ts's:
 * bench/results/<date>-<size>-<name>.md, every value in .json beside it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { Machine } from './machine';
import { isMounted } from './mounts';
import { remove } from './proc';
import { type Row, type Verdict, renderRows } from './table';

const GiB = 1024 ** 3;

/** `4G`, `512M`, `1T` (binary units) -> bytes and the label used in file names. */
export function parseSize(text: string): { size: number; label: string } {
  const m = /^(\d+)\s*([KMGT])(i?B)?$/i.exec(text.trim());
  if (!m) throw new Error(`--size ${JSON.stringify(text)}: expected a number and K, M, G or T (binary units), e.g. 4G`);
  const unit = m[2].toUpperCase();
  const size = Number(m[1]) * 1024 ** ('KMGT'.indexOf(unit) + 1);
  return { size, label: `${m[1]}${unit}` };
}

/** The checkout this file was built from: dist/bench/bench/<script>.js -> the root (it holds bin/chainfs). */
export function projectRoot(): string {
  let dir = __dirname;
  while (dir !== path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'bin', 'chainfs'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find the chainfs checkout (bin/chainfs) above the bench script');
}

/** The options every issue script takes (as run.ts's). */
export interface CommonOptions {
  size: number;
  label: string;
  seed: number;
  runs: number;
  /** fio seconds per run; undefined: the script's default. */
  fioRuntime?: number;
  /** `--only`: the groups to run (the script checks the names). */
  only?: string[];
  root: string;
}

/**
 * Parses the common options, and the flags in `flags` (boolean, default
 * false: run.ts's `--clean`), returned in `flags`.
 */
export function commonOptions(argv: string[], flags: string[] = []): CommonOptions & { flags: Record<string, boolean> } {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: 'string', default: '4G' },
      seed: { type: 'string', default: '1' },
      runs: { type: 'string', default: '3' },
      'fio-runtime': { type: 'string' },
      only: { type: 'string' },
      root: { type: 'string', default: '/var/tmp/chainfs-bench' },
      ...Object.fromEntries(flags.map((f) => [f, { type: 'boolean' as const, default: false }])),
    },
  });
  const int = (name: string, v: string | undefined, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const { size, label } = parseSize(values.size as string);
  return {
    size, label,
    seed: int('seed', values.seed as string, 0),
    runs: int('runs', values.runs as string, 1),
    ...(values['fio-runtime'] !== undefined ? { fioRuntime: int('fio-runtime', values['fio-runtime'] as string, 1) } : {}),
    ...(values.only ? { only: (values.only as string).split(',').map((g) => g.trim()).filter(Boolean) } : {}),
    root: path.resolve(values.root as string),
    flags: Object.fromEntries(flags.map((f) => [f, (values as Record<string, unknown>)[f] === true])),
  };
}

/** Scratch of runs that died without cleaning up (SIGKILL): unmount what is left and remove it. */
export function clearDeadRuns(root: string): void {
  if (!fs.existsSync(root)) return;
  for (const e of fs.readdirSync(root)) {
    const m = /^run-(\d+)$/.exec(e);
    if (!m || fs.existsSync(`/proc/${m[1]}`)) continue;
    const dir = path.join(root, e);
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4])
      .filter((p): p is string => !!p && p.startsWith(`${dir}/`));
    for (const p of mounts) spawnSync('fusermount', ['-uz', p], { stdio: 'ignore' });
    if (mounts.every((p) => !isMounted(p))) remove(dir);
  }
}

export function freeBytes(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

/** Throws unless `dir` has `need` bytes free, naming both. */
export function needSpace(dir: string, need: number, what: string): void {
  if (freeBytes(dir) < need) {
    throw new Error(`${dir} has ${(freeBytes(dir) / GiB).toFixed(1)} GiB free; ${what} needs about ${(need / GiB).toFixed(1)} GiB`);
  }
}

export interface Report {
  /** Title after "chainfs benchmark: ", e.g. "backups (issue #12), 4G". */
  title: string;
  /** The bullet lines after Machine/Software/Date, already markdown ("- **Workload:** ..."). */
  bullets: string[];
  rows: Row[];
  /** Lines after the table (notes). */
  notes?: string[];
}

/**
 * Renders the report (header, table, targets missed), prints it, and
 * writes bench/results/<date>-<label>-<name>.md and .json (every value).
 */
export function writeReport(root: string, name: string, label: string, m: Machine, r: Report, raw: Record<string, unknown>,
  log: (msg: string) => void): Verdict[] {
  m.load += `; at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`;
  const { markdown: table, verdicts } = renderRows(r.rows);
  const missed = verdicts.filter((v) => !v.met);
  const text = [
    `# chainfs benchmark: ${r.title}, ${m.date.slice(0, 10)}`,
    '',
    `- **Machine:** ${m.cores} × ${m.cpu}, ${m.memory} RAM, ${m.kernel}, ${m.filesystem}; load average (1, 5, 15 min) at start ${m.load}`,
    `- **Software:** Node ${m.node}, qemu ${m.qemu}, ${m.fio}; chainfs ${m.chainfs}`,
    `- **Date:** ${m.date}`,
    ...r.bullets,
    '- **chainfs ratio:** how chainfs compares to that anchor, higher is better for chainfs (anchor time / chainfs time; chainfs rate / anchor rate).',
    '',
    table,
    '',
    ...(r.notes?.length ? [...r.notes, ''] : []),
    missed.length
      ? `Targets missed (${missed.length} of ${verdicts.length}):\n${missed.map((v) => `- ${v.row}, ${v.what}: ${v.detail}`).join('\n')}`
      : `All ${verdicts.length} targets met.`,
    '',
  ].join('\n');
  const dir = path.join(root, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${m.date.slice(0, 10)}-${label}-${name}.md`);
  fs.writeFileSync(file, text);
  fs.writeFileSync(file.replace(/\.md$/, '.json'), `${JSON.stringify({ machine: m, ...raw, rows: r.rows }, null, 1)}\n`);
  process.stdout.write(`\n${text}`);
  log(`written to ${path.relative(process.cwd(), file) || file}`);
  return verdicts;
}
