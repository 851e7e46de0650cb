/**
 * The mount daemon, for real: mounted views equal the qemu oracle (and the
 * engine's own bytes) under cmp, qemu-img reads them, writes are refused,
 * parallel readers get correct bytes, and the lifecycle (umount, SIGTERM,
 * kill -9 then umount then mount again) leaves no mount and no process.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainfs } from './helpers/cli';
import { buildOracle } from './helpers/oracle';
import { buildReplica, type Scenario } from './helpers/replica-builder';
import { SCENARIOS } from './helpers/scenarios';
import { fingerprintTree } from './helpers/tree';
import { cmp, daemonPid, isMounted, mountReplica, sh, unmount, unmountAll } from './helpers/mount';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-mount-'));
afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe.each(SCENARIOS.map((s) => [s.name, s] as const))('mounted views of %s', (name, scenario) => {
  const mp = path.join(tmp, `mnt-${name}`);
  let built: ReturnType<typeof buildReplica>;
  let oracle: ReturnType<typeof buildOracle>;
  let before: ReturnType<typeof fingerprintTree>;

  beforeAll(() => {
    built = buildReplica(scenario, tmp);
    oracle = buildOracle(scenario, tmp);
    before = fingerprintTree(built.root);
    mountReplica(built.dir, mp);
  });
  afterAll(() => {
    if (isMounted(mp)) unmount(mp);
    expect(fingerprintTree(built.root)).toEqual(before); // the source is never written
  });

  it('every view equals the oracle byte for byte (cmp), with exact sizes', () => {
    for (const v of built.views) {
      const file = v.snapshot === undefined ? path.join(mp, 'volume.img') : path.join(mp, 'snapshots', `${v.snapshot}.img`);
      expect(fs.statSync(file).size, file).toBe(v.size);
      expect(cmp(file, oracle.views.get(v.file)!), `${file} vs oracle`).toBe(true);
    }
  });

  it('qemu-img sees a raw image of the right size and compares equal', () => {
    const info = JSON.parse(sh('qemu-img', ['info', '--output=json', path.join(mp, 'volume.img')]));
    expect(info.format).toBe('raw');
    expect(info['virtual-size']).toBe(scenario.ops.reduce((s, op) => (op.op === 'expand' ? op.size : s), scenario.size));
    const head = built.views.find((v) => v.snapshot === undefined)!;
    const r = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(mp, 'volume.img'), oracle.views.get(head.file)!]);
    expect(r.status, String(r.stdout) + String(r.stderr)).toBe(0);
  });
});

describe('mount behaviour', () => {
  const scenario = SCENARIOS.find((s) => s.name === 'raw-backing') ?? SCENARIOS[0];
  const mp = path.join(tmp, 'mnt-behaviour');
  let built: ReturnType<typeof buildReplica>;
  let oracle: ReturnType<typeof buildOracle>;
  let headOracle: string;

  beforeAll(() => {
    built = buildReplica(scenario, tmp);
    oracle = buildOracle(scenario, tmp);
    headOracle = oracle.views.get(built.views.find((v) => v.snapshot === undefined)!.file)!;
  });
  afterAll(() => unmountAll());

  it('shows the tree read-only and refuses every write', () => {
    mountReplica(built.dir, mp);
    try {
      expect(fs.readdirSync(mp).sort()).toEqual(['chain.json', 'snapshots', 'volume.img']);
      const json = JSON.parse(fs.readFileSync(path.join(mp, 'chain.json'), 'utf8'));
      expect(json.head).toMatch(/^volume-head-\d{3}\.img$/);
      expect(() => fs.openSync(path.join(mp, 'volume.img'), 'r+')).toThrow(expect.objectContaining({ code: 'EROFS' }));
      expect(() => fs.writeFileSync(path.join(mp, 'new'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));
      expect(() => fs.truncateSync(path.join(mp, 'volume.img'), 0)).toThrow(expect.objectContaining({ code: 'EROFS' }));
      expect(() => fs.unlinkSync(path.join(mp, 'chain.json'))).toThrow(expect.objectContaining({ code: 'EROFS' }));
      expect(() => fs.mkdirSync(path.join(mp, 'd'))).toThrow(expect.objectContaining({ code: 'EROFS' }));
      // du tells real usage: never more than the view's size
      const st = fs.statSync(path.join(mp, 'volume.img'));
      expect(st.blocks * 512).toBeLessThanOrEqual(st.size);
    } finally {
      unmount(mp);
    }
  });

  it('serves parallel random readers correct bytes (4 processes)', async () => {
    mountReplica(built.dir, mp);
    try {
      const script = `
        const fs = require('fs');
        const [file, oracle, seed] = process.argv.slice(1);
        const want = fs.readFileSync(oracle); const fd = fs.openSync(file, 'r');
        let s = Number(seed); const rnd = (n) => { s = (s * 1103515245 + 12345) % 2147483648; return s % n; };
        for (let i = 0; i < 400; i++) {
          const len = 1 + rnd(200000); const pos = rnd(want.length - len);
          const b = Buffer.alloc(len); fs.readSync(fd, b, 0, len, pos);
          if (!b.equals(want.subarray(pos, pos + len))) { console.error('mismatch at', pos, len); process.exit(1); }
        }`;
      const codes = await Promise.all([1, 2, 3, 4].map((seed) => new Promise<number | null>((resolve) => {
        const p = spawn(process.execPath, ['-e', script, path.join(mp, 'volume.img'), headOracle, String(seed)], { stdio: 'inherit' });
        p.on('exit', resolve);
      })));
      expect(codes).toEqual([0, 0, 0, 0]);
    } finally {
      unmount(mp);
    }
  });

  it('umount leaves no mount and no daemon', () => {
    mountReplica(built.dir, mp);
    const pid = daemonPid(mp);
    unmount(mp);
    expect(isMounted(mp)).toBe(false);
    expect(fs.existsSync(`/proc/${pid}`) && !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z')).toBe(false);
  });

  it('SIGTERM unmounts cleanly', async () => {
    mountReplica(built.dir, mp);
    const pid = daemonPid(mp);
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && isMounted(mp); i++) await new Promise((r) => setTimeout(r, 50));
    expect(isMounted(mp)).toBe(false);
    unmountAll();
  });

  it('after kill -9: umount clears the stale mount and a new mount works', () => {
    mountReplica(built.dir, mp);
    process.kill(daemonPid(mp), 'SIGKILL');
    spawnSync('sleep', ['0.2']);
    expect(() => fs.readdirSync(mp)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
    unmount(mp);
    expect(isMounted(mp)).toBe(false);
    mountReplica(built.dir, mp);
    expect(cmp(path.join(mp, 'volume.img'), headOracle)).toBe(true);
    unmount(mp);
  });

  it('mounting over a stale mount point works', () => {
    mountReplica(built.dir, mp);
    process.kill(daemonPid(mp), 'SIGKILL');
    spawnSync('sleep', ['0.2']);
    mountReplica(built.dir, mp);
    expect(cmp(path.join(mp, 'volume.img'), headOracle)).toBe(true);
    unmount(mp);
  });

  it('fails with one clear line for a bad mount point or replica', () => {
    const r1 = chainfs(['mount', built.dir, path.join(tmp, 'no-such-dir')]);
    expect(r1.code).toBe(1);
    expect(r1.stderr.trim().split('\n')).toHaveLength(1);
    expect(r1.stderr).toMatch(/mount point does not exist/);
    const r2 = chainfs(['mount', path.join(tmp, 'no-such-replica'), tmp]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/no-such-replica.*no such file/);
    const full = path.join(tmp, 'not-empty');
    fs.mkdirSync(full, { recursive: true });
    fs.writeFileSync(path.join(full, 'keep-me'), 'x');
    const r4 = chainfs(['mount', built.dir, full]);
    expect(r4.code).toBe(1);
    expect(r4.stderr.trim().split('\n')).toHaveLength(1);
    expect(r4.stderr).toMatch(/not-empty: mount point is not empty/);
    expect(isMounted(full)).toBe(false);
    const r3 = chainfs(['umount', path.join(tmp)]);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toMatch(/not mounted/);
  });

  it('qemu-img convert from the mount equals the oracle', () => {
    mountReplica(built.dir, mp);
    try {
      const out = path.join(tmp, 'converted.raw');
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', path.join(mp, 'volume.img'), out]);
      expect(cmp(out, headOracle)).toBe(true);
    } finally {
      unmount(mp);
    }
  });
});

describe('read fast path (reads served in C from published runs)', () => {
  const GiB = 1024 ** 3;
  const N = 700;
  // One 4 KiB block in each of N GiB-apart places, across two layers: every
  // read lands in its own region and its own 1 GiB chunk of the published
  // table, so with --cache-mb 1 the table goes over budget and is dropped.
  const offsets = Array.from({ length: N }, (_, i) => i * GiB + ((i * 7919) % 256) * 4096);
  const scenario: Scenario = {
    name: 'wide',
    size: (N + 4) * GiB,
    ops: [
      ...offsets.slice(0, N / 2).map((offset, i) => ({ op: 'write' as const, offset, length: 4096, data: { kind: 'seed' as const, seed: 1000 + i } })),
      { op: 'snapshot', name: 'half' },
      ...offsets.slice(N / 4).map((offset, i) => ({ op: 'write' as const, offset, length: 4096, data: { kind: 'seed' as const, seed: 5000 + i } })),
    ],
  };
  const mp = path.join(tmp, 'mnt-wide');
  afterAll(() => unmountAll());

  it('first reads go through JS, repeats are served in C, a table over budget refills: every byte as the model says', () => {
    const built = buildReplica(scenario, tmp);
    const log = path.join(tmp, 'wide.log');
    mountReplica(built.dir, mp, ['--cache-mb', '1', '--log', log]);
    let reads = 0;
    try {
      for (const v of built.views) {
        const file = v.snapshot === undefined ? path.join(mp, 'volume.img') : path.join(mp, 'snapshots', `${v.snapshot}.img`);
        const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT); // every read reaches the daemon
        try {
          const b = Buffer.alloc(8192);
          for (const off of offsets) {
            if (off + 8192 > v.size) continue;
            const want = Buffer.concat([built.model.readBlock(v.file, off / 4096), built.model.readBlock(v.file, off / 4096 + 1)]);
            for (const pass of ['first', 'repeated']) { // the first through JS, the repeat from C
              expect(fs.readSync(fd, b, 0, 8192, off)).toBe(8192);
              if (!b.equals(want)) expect.fail(`${file} at ${off} (${pass} read) differs from the model`);
            }
            reads++;
          }
        } finally {
          fs.closeSync(fd);
        }
      }
    } finally {
      unmount(mp);
    }
    const m = /reads: (\d+) served in C from published runs, (\d+) through JS; .* dropped (\d+) times/.exec(fs.readFileSync(log, 'utf8'));
    expect(m, 'the daemon logs how reads were served').not.toBeNull();
    const [fast, slow, flushes] = m!.slice(1).map(Number);
    expect(slow).toBeGreaterThanOrEqual(reads); // each region's first read
    expect(fast).toBeGreaterThanOrEqual(reads - flushes); // the repeats (but one after each drop of the table)
    expect(flushes).toBeGreaterThan(0);
    expect(fast + slow).toBe(2 * reads);
  });
});
