/**
 * Opening and inspecting a large v2 disk: a 1 TiB sparse image (1 Mi
 * clusters, a 4 GiB metadata region) holding 200 lvols (50 replicas of
 * 5 GiB, each a head and 3 snapshots, clusters spread over every extent
 * page), clean (blobid mask) and crashed (metadata scan). Each measure runs
 * in its own process: wall time of open + inspect (text and JSON), and
 * peak RSS. Target (issue #13): under 1 s and 150 MB.
 *
 *   node dist/bench/bench/spdk.js [--dir DIR]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MiB, SpdkDiskBuilder } from '../test/helpers/spdk-builder';

const GiB = 1024 * MiB;
/** The checkout: dist/bench/bench/spdk.js -> the root. */
const ROOT = path.resolve(__dirname, '..', '..', '..');

function buildDisk(file: string, clean: boolean): void {
  const b = new SpdkDiskBuilder({ clusters: 1024 * 1024, lvsName: 'disk-bench' });
  for (let r = 0; r < 50; r++) {
    const rep = `pvc-${String(r).padStart(8, '0')}-0000-4000-8000-000000000000-r-${String(r).padStart(8, '0')}`;
    const h = b.create(rep, 5 * GiB);
    for (let s = 0; s < 4; s++) {
      for (let k = 0; k < 10; k++) b.allocateZero(h, (k * 512 + r * 7 + s * 3) % 5120);
      if (s < 3) b.snapshot(h, `${rep}-snap-s${s}`, { user_created: 'false', snapshot_timestamp: '2026-08-20T09:00:00Z' });
    }
  }
  b.build(file, { clean });
}

function measure(file: string): void {
  const t0 = process.hrtime.bigint();
  // The product as built (dist/), as the CLI runs it.
  const { openSpdk } = require(path.join(ROOT, 'dist', 'source', 'spdk', 'open.js')) as typeof import('../src/source/spdk/open');
  const cat = openSpdk([file]);
  const text = cat.render();
  const json = JSON.stringify(cat.report());
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const lvols = cat.disks[0].lvs.lvols.size;
  cat.close();
  process.stdout.write(`${JSON.stringify({ ms: Math.round(ms), maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024), lvols, textBytes: text.length, jsonBytes: json.length })}\n`);
}

function main(): void {
  const args = process.argv.slice(2);
  if (args[0] === '--measure') { measure(args[1]); return; }
  const dirArg = args.indexOf('--dir');
  const dir = fs.mkdtempSync(path.join(dirArg >= 0 ? args[dirArg + 1] : os.tmpdir(), 'spdk-bench-'));
  try {
    for (const clean of [true, false]) {
      const file = path.join(dir, `disk-${clean ? 'clean' : 'crashed'}.img`);
      const t = Date.now();
      buildDisk(file, clean);
      const built = Date.now() - t;
      const r = spawnSync(process.execPath, [__filename, '--measure', file], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(r.stderr);
      const m = JSON.parse(r.stdout);
      const st = fs.statSync(file);
      const c0 = Date.now();
      const cli = spawnSync(path.join(ROOT, 'bin', 'chainfs'), ['inspect', '--no-contents', file], { encoding: 'utf8' });
      if (cli.status !== 0) throw new Error(cli.stderr);
      const cliMs = Date.now() - c0;
      process.stdout.write(`v2 disk 1 TiB (${Math.round(st.blocks * 512 / MiB)} MiB allocated), ${m.lvols} lvols, ${clean ? 'clean (blobid mask)' : 'crashed (metadata scan)'}: open+inspect ${m.ms} ms, peak RSS ${m.maxRssMB} MB; \`chainfs inspect --no-contents\` ${cliMs} ms wall (built in ${built} ms)\n`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
