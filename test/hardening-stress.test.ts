/**
 * Stress: 8 concurrent readers on a mounted chain for CHAINFS_STRESS_SECONDS
 * (default 10; set 60 for the long run), every byte checked against the
 * builder's model, and the daemon's RSS watched: after warm-up it must not
 * grow by more than the resolved-run cache it was given (--cache-mb).
 * Half the readers use O_DIRECT so that the daemon, not the page cache,
 * answers most reads.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { settle, treeChanges } from './helpers/broken-replicas';
import { daemonPid, mountReplica, unmount, unmountAll } from './helpers/mount';
import { buildReplica, type Op, type Scenario } from './helpers/replica-builder';
import { fingerprintTree } from './helpers/tree';

const SECONDS = Number(process.env.CHAINFS_STRESS_SECONDS ?? 10);
const READERS = 8;
const CACHE_MB = 8;
const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 64 * MiB;

/** Six layers of scattered writes (deterministic): many runs per 4 MiB region, partial blocks, zeros. */
function stressScenario(): Scenario {
  let s = 12345;
  const rnd = (n: number) => { s = (s * 1103515245 + 12345) % 2147483648; return s % n; };
  const ops: Op[] = [];
  for (let layer = 0; layer < 6; layer++) {
    for (let i = 0; i < 60; i++) {
      const length = 1 + rnd(96 * KiB);
      const offset = rnd(SIZE - length);
      ops.push({ op: 'write', offset, length, data: i % 7 === 0 ? { kind: 'zero' } : { kind: 'seed', seed: 1 + rnd(1e6) } });
    }
    if (layer < 5) ops.push({ op: 'snapshot', name: `s${layer + 1}` });
  }
  return { name: 'stress', size: SIZE, ops };
}

/** A reader process: random reads (and now and then a 1 MiB sweep) until the deadline, each compared with the oracle file. */
const READER = `
const fs = require('fs');
const [file, oracle, seed, seconds, direct] = process.argv.slice(1);
const fd = fs.openSync(file, fs.constants.O_RDONLY | (direct === '1' ? fs.constants.O_DIRECT : 0));
const ofd = fs.openSync(oracle, 'r');
const size = fs.fstatSync(ofd).size;
let s = Number(seed);
const rnd = (n) => { s = (s * 1103515245 + 12345) % 2147483648; return s % n; };
const got = Buffer.alloc(1 << 20); const want = Buffer.alloc(1 << 20);
const deadline = Date.now() + Number(seconds) * 1000;
let reads = 0, bytes = 0;
while (Date.now() < deadline) {
  const len = rnd(10) === 0 ? (1 << 20) : 1 + rnd(256 * 1024);
  const pos = rnd(size - len + 1);
  let n;
  try { n = fs.readSync(fd, got, 0, len, pos); } catch (e) { console.error('read', pos, len, e.code); process.exit(1); }
  fs.readSync(ofd, want, 0, len, pos);
  if (n !== len || !got.subarray(0, n).equals(want.subarray(0, len))) { console.error('mismatch at', pos, len, n); process.exit(1); }
  reads++; bytes += n;
}
console.log(JSON.stringify({ reads, bytes }));
`;

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-stress-'));
afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

it(`${READERS} readers for ${SECONDS} s: every byte right, no error, daemon RSS bounded by the cache`, async () => {
  const r = buildReplica(stressScenario(), tmp);
  settle(r.root);
  const before = fingerprintTree(r.root);
  const oracles = ['head', 's3'].map((v) => {
    const file = path.join(tmp, `${v}.oracle`);
    fs.writeFileSync(file, r.model.view(v === 'head' ? r.model.head : `volume-snap-${v}.img`));
    return file;
  });
  const mp = path.join(tmp, 'mnt');
  mountReplica(r.dir, mp, ['--cache-mb', String(CACHE_MB), '--log', path.join(tmp, 'daemon.log')]);
  const pid = daemonPid(mp);
  const rssAtMount = rssKiB(pid);

  const samples: number[] = [];
  const started = Date.now();
  const sampler = setInterval(() => samples.push(rssKiB(pid)), 250);
  const results = await Promise.all(Array.from({ length: READERS }, (_, i) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const snapshot = i >= READERS - 2;
    const p = spawn(process.execPath, ['-e', READER,
      path.join(mp, snapshot ? 'snapshots/s3.img' : 'volume.img'), oracles[snapshot ? 1 : 0], String(i + 1), String(SECONDS), i % 2 === 0 ? '1' : '0',
    ], { stdio: ['ignore', 'pipe', 'pipe'], timeout: (SECONDS + 60) * 1000 });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => resolve({ code, out, err }));
  })));
  clearInterval(sampler);
  const elapsed = (Date.now() - started) / 1000;

  for (const res of results) expect(res.code, res.err).toBe(0);
  const reads = results.reduce((a, res) => a + JSON.parse(res.out).reads, 0);
  expect(reads).toBeGreaterThan(READERS * 10);
  // Warm-up: the first second (views opened, regions resolved, V8 settled); then no growth past the cache.
  const warm = samples.slice(Math.min(4, samples.length - 1));
  const baseline = Math.max(rssAtMount, warm[0]);
  const peak = Math.max(...warm);
  console.log(`stress: ${reads} reads in ${elapsed.toFixed(1)} s; daemon RSS ${rssAtMount} KiB at mount, ${baseline} after warm-up, peak ${peak}`);
  expect(peak - baseline, `RSS grew from ${baseline} to ${peak} KiB`).toBeLessThanOrEqual(CACHE_MB * 1024);
  expect(fs.readFileSync(path.join(tmp, 'daemon.log'), 'utf8')).not.toMatch(/ error: /);
  unmount(mp);
  expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]);
}, (SECONDS + 90) * 1000);
