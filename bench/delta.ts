/**
 * `make bench`'s rows for issue #15, side by side on the same files:
 * - `chainfs diff --from` the oldest snapshot of the 2 TiB x 250 chain (allocation only);
 * - an overlay export (`--since` the newest snapshot: about 10% of the
 *   volume changed) against a full qcow2 export of the same view, time and size;
 * - qcow2 streamed to a pipe against `qemu-img convert -O qcow2` to a file + `cat` of it.
 * Uses the main and scale workloads of `make bench` (generated if missing).
 *
 *   node dist/bench/bench/delta.js [--size 4G] [--runs 3] [--root /var/tmp/chainfs-bench]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureScaleWorkload } from './scale';
import { ensureWorkload } from './workload';

const CHAINFS = path.resolve(__dirname, '..', '..', '..', 'bin', 'chainfs');

function wall(script: string): number {
  const t = process.hrtime.bigint();
  const r = spawnSync('bash', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0 && r.status !== 1) throw new Error(`failed (${r.status}): ${script}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Runs the measures interleaved `runs` times; medians. */
function side(runs: number, scripts: Record<string, string>, before?: () => void): Record<string, number> {
  const times: Record<string, number[]> = {};
  for (let i = 0; i < runs; i++) {
    for (const [k, s] of Object.entries(scripts)) {
      before?.();
      (times[k] ??= []).push(wall(s));
    }
  }
  return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
}

function parseSize(s: string): number {
  const m = /^(\d+)([MG])$/i.exec(s);
  if (!m) throw new Error(`--size ${s}: like 1G or 512M`);
  return Number(m[1]) * (m[2].toUpperCase() === 'G' ? 1 << 30 : 1 << 20);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    size: { type: 'string', default: '4G' }, runs: { type: 'string', default: '3' },
    root: { type: 'string', default: '/var/tmp/chainfs-bench' },
  } });
  const runs = Number(values.runs);
  const root = path.resolve(values.root as string);
  fs.mkdirSync(root, { recursive: true });
  const log = (m: string) => process.stderr.write(`${m}\n`);
  const { workload: w } = await ensureWorkload(root, values.size as string, parseSize(values.size as string), 1, log, () => undefined);
  const { scale } = ensureScaleWorkload(root, 1, log);
  const out = fs.mkdtempSync(path.join(root, 'delta-run-'));
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const rows: string[] = [];
  try {
    // diff over the long chain: from the oldest snapshot to the head (249 layers above it).
    const oldest = scale.layers[0].file.replace(/^volume-snap-/, '').replace(/\.img$/, '');
    const d = side(Math.max(runs, 5), { diff: `${q(CHAINFS)} diff ${q(scale.replica)} --from ${oldest} --json > /dev/null` });
    rows.push(`| diff --from the oldest of 250 layers, 2 TiB | ${(d.diff * 1000).toFixed(0)} ms | < 1 s |`);

    // Overlay: since the newest snapshot (the head's own layer changed, ~10%), over a raw export of it.
    const snaps = w.plan.layers.filter((l) => l.file.startsWith('volume-snap-')).map((l) => l.file.replace(/^volume-snap-/, '').replace(/\.img$/, ''));
    const newest = snaps[snaps.length - 1];
    const base = path.join(out, 'base.raw');
    wall(`${q(CHAINFS)} export ${q(w.replica)} ${q(base)} --snapshot ${newest} -q`);
    const full = path.join(out, 'full.qcow2');
    const ov = path.join(out, 'overlay.qcow2');
    const qimg = path.join(out, 'qemu.qcow2');
    const piped = path.join(out, 'piped.qcow2');
    const t = side(runs, {
      full: `rm -f ${q(full)}; ${q(CHAINFS)} export ${q(w.replica)} ${q(full)} --format qcow2 -q`,
      overlay: `rm -f ${q(ov)}; ${q(CHAINFS)} export ${q(w.replica)} ${q(ov)} --format qcow2 --since ${newest} --backing ${q(base)} -q`,
      stream: `${q(CHAINFS)} export ${q(w.replica)} - --format qcow2 -q | cat > ${q(piped)}; sync ${q(piped)}`,
      qemu: `rm -f ${q(qimg)}; qemu-img convert -O qcow2 ${q(w.qcow2Top)} ${q(qimg)} && cat ${q(qimg)} > ${q(piped)}.q; sync ${q(piped)}.q`,
    }, () => spawnSync('sync'));
    const size = (f: string) => fs.statSync(f).size;
    rows.push(`| overlay export --since ${newest} (qcow2) | ${t.overlay.toFixed(2)} s, ${(size(ov) / 2 ** 20).toFixed(0)} MiB | full qcow2 export: ${t.full.toFixed(2)} s, ${(size(full) / 2 ** 20).toFixed(0)} MiB: ${(t.full / t.overlay).toFixed(1)}x faster, ${(100 * size(ov) / size(full)).toFixed(1)}% of the size (goals 5x, <= 12%) |`);
    rows.push(`| export - --format qcow2 \\| cat > file | ${t.stream.toFixed(2)} s | qemu-img convert -O qcow2 + cat: ${t.qemu.toFixed(2)} s: ${(t.qemu / t.stream).toFixed(2)}x (goal 1.2x) |`);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
  process.stdout.write(`| what | chainfs | anchor / goal |\n|---|---|---|\n${rows.join('\n')}\n`);
}

void main().catch((e) => {
  process.stderr.write(`bench/delta: ${(e as Error).message}\n`);
  process.exit(1);
});
