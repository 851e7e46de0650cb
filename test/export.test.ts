/**
 * `chainfs export` against independent oracles: every view (head and each
 * snapshot) of every scenario, exported raw and qcow2 by the real CLI, must
 * equal qemu's flattening of the same history; the engine v1.4.4 fixture
 * must give the engine's own bytes. Every qcow2 passes `qemu-img check` and
 * has no backing file; every printed SHA-512 is the file's; raw output is
 * sparse; the source tree is untouched.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chainfsOk } from './helpers/cli';
import { buildOracle, type Oracle } from './helpers/oracle';
import { qemuImg, qemuMap } from './helpers/qemu';
import { buildReplica, type BuiltReplica, type BuiltView } from './helpers/replica-builder';
import { SCENARIOS, qcow2CompressedBacking } from './helpers/scenarios';
import { fingerprintTree } from './helpers/tree';

// The CLI runs through spawnSync: let the test worker's event loop breathe between tests, or
// vitest's own RPC to it times out while a run of synchronous tests goes on.
const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-export-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const snapArgs = (v: BuiltView) => (v.snapshot !== undefined ? ['--snapshot', v.snapshot] : []);
const label = (v: BuiltView) => (v.snapshot !== undefined ? `snapshot ${v.snapshot}` : 'head');

/**
 * The chain's allocated data: what the view's chain files have allocated,
 * plus the backing image's data (a qcow2's guest data as qemu maps it: a
 * compressed image holds more than its file's blocks). A raw export never
 * needs more.
 */
function chainAllocated(b: BuiltReplica, v: BuiltView): number {
  const files = b.model.chain(v.file).map((l) => path.join(b.dir, l.file));
  let bytes = files.reduce((sum, f) => sum + fs.statSync(f).blocks * 512, 0);
  if (b.backingPath) {
    const isQcow2 = fs.readFileSync(b.backingPath).subarray(0, 4).toString('latin1') === 'QFI\xfb';
    bytes += isQcow2
      ? qemuMap(b.backingPath).filter((e) => e.data).reduce((sum, e) => sum + e.length, 0)
      : fs.statSync(b.backingPath).blocks * 512;
  }
  return bytes;
}

/** `qemu-img check` (throws on any error or leak), and `info` shows a standalone qcow2 of the right size. */
function checkQcow2(file: string, virtualSize: number): void {
  qemuImg(['check', '-q', '-f', 'qcow2', file]);
  const info = JSON.parse(qemuImg(['info', '--output=json', '-f', 'qcow2', file]));
  expect(info.format).toBe('qcow2');
  expect(info['virtual-size']).toBe(virtualSize);
  expect(info['backing-filename']).toBeUndefined();
  expect(info['full-backing-filename']).toBeUndefined();
  expect(info['format-specific'].data.compat).toBe('1.1'); // version 3
}

for (const s of SCENARIOS) {
  describe(`scenario ${s.name}`, () => {
    let built: BuiltReplica;
    let oracle: Oracle;
    let before: ReturnType<typeof fingerprintTree>;
    let out: string;

    beforeAll(() => {
      built = buildReplica(s, tmp);
      oracle = buildOracle(s, tmp);
      before = fingerprintTree(built.root);
      out = fs.mkdtempSync(path.join(tmp, `out-${s.name}-`));
    });

    afterAll(() => {
      if (built) expect(fingerprintTree(built.root)).toEqual(before);
    });

    it('raw export of every view equals the oracle, is sparse, and prints its SHA-512', async () => {
      for (const v of built.views) {
        const file = path.join(out, `${v.file}.raw`);
        const stdout = chainfsOk(['export', built.dir, file, ...snapArgs(v), '--checksum', '--quiet']).toString();
        const data = fs.readFileSync(file);
        const expected = fs.readFileSync(oracle.views.get(v.file)!);
        expect(data.length, label(v)).toBe(v.size);
        expect(data.equals(expected), `${label(v)} differs from the oracle`).toBe(true);
        qemuImg(['compare', '-q', '-f', 'raw', '-F', 'raw', file, oracle.views.get(v.file)!]);
        expect(stdout, label(v)).toBe(`${sha512(data)}  ${file}\n`);
        expect(fs.statSync(file).blocks * 512, `${label(v)} allocation`).toBeLessThanOrEqual(chainAllocated(built, v));
        fs.rmSync(file);
        await breathe();
      }
    });

    it('qcow2 export of every view equals the oracle and passes qemu-img check', async () => {
      for (const v of built.views) {
        const file = path.join(out, `${v.file}.qcow2`);
        const stdout = chainfsOk(['export', built.dir, file, ...snapArgs(v), '--format', 'qcow2', '--checksum', '--quiet']).toString();
        checkQcow2(file, v.size);
        qemuImg(['compare', '-q', '-f', 'qcow2', '-F', 'raw', file, oracle.views.get(v.file)!]);
        expect(stdout, label(v)).toBe(`${sha512(fs.readFileSync(file))}  ${file}\n`);
        fs.rmSync(file);
        await breathe();
      }
    });

    it('qcow2 of the head with --compress, 512-byte and 2 MiB clusters', async () => {
      const head = built.views[0];
      for (const args of [['--compress'], ['--cluster-size', '512', '--compress'], ['--cluster-size', '2M']]) {
        const file = path.join(out, `head-${args.join('')}.qcow2`);
        chainfsOk(['export', built.dir, file, '--format', 'qcow2', '--quiet', ...args]);
        checkQcow2(file, head.size);
        const info = JSON.parse(qemuImg(['info', '--output=json', file]));
        expect(info['cluster-size'], args.join(' ')).toBe(args.includes('512') ? 512 : args.includes('2M') ? 2 << 20 : 65536);
        qemuImg(['compare', '-q', '-f', 'qcow2', '-F', 'raw', file, oracle.views.get(head.file)!]);
        fs.rmSync(file);
        await breathe();
      }
    });
  });
}

describe('a qcow2 backing image with compressed clusters', () => {
  it('really has compressed clusters (so the scenario above covers them)', () => {
    const b = buildReplica(qcow2CompressedBacking, tmp);
    const check = qemuImg(['check', '-f', 'qcow2', b.backingPath!]);
    const m = /([\d.]+)% compressed clusters/.exec(check);
    expect(Number(m?.[1])).toBeGreaterThan(0);
  });
});

describe('engine v1.4.4 fixture chain-basic', () => {
  const FIXTURE = path.join(__dirname, 'fixtures', 'engine-v1.4.4', 'chain-basic');
  const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
  let dir: string;
  let out: string;
  let before: ReturnType<typeof fingerprintTree>;

  beforeAll(() => {
    const root = fs.mkdtempSync(path.join(tmp, 'engine-'));
    execFileSync('tar', ['-xzf', path.join(FIXTURE, 'chain-basic.tar.gz'), '-C', root]);
    dir = path.join(root, manifest.replica_dir);
    out = fs.mkdtempSync(path.join(tmp, 'engine-out-'));
    before = fingerprintTree(dir);
  });

  afterAll(() => {
    if (dir) expect(fingerprintTree(dir)).toEqual(before);
  });

  for (const v of manifest.expected_views as { snapshot_name?: string; sha256: string; disk: string }[]) {
    const name = v.snapshot_name ? `snapshot ${v.snapshot_name}` : 'head';
    it(`raw and qcow2 exports of the ${name} give the engine's bytes`, () => {
      const snap = v.snapshot_name ? ['--snapshot', v.snapshot_name] : [];
      const raw = path.join(out, `${v.disk}.raw`);
      const printed = chainfsOk(['export', dir, raw, ...snap, '--checksum', '--quiet']).toString();
      const data = fs.readFileSync(raw);
      expect(sha256(data)).toBe(v.sha256);
      expect(printed).toBe(`${sha512(data)}  ${raw}\n`);
      const qcow2 = path.join(out, `${v.disk}.qcow2`);
      chainfsOk(['export', dir, qcow2, ...snap, '--format', 'qcow2', '--quiet']);
      checkQcow2(qcow2, data.length);
      qemuImg(['compare', '-q', '-f', 'qcow2', '-F', 'raw', qcow2, raw]);
    });
  }

  it('the raw export keeps holes and the allocated zero blocks may become holes, never more than the chain holds', () => {
    const raw = path.join(out, 'holes.raw');
    chainfsOk(['export', dir, raw, '--quiet']);
    const chainBytes = (manifest.head_chain_head_first as string[])
      .reduce((sum, f) => sum + fs.statSync(path.join(dir, f)).blocks * 512, 0);
    const st = fs.statSync(raw);
    expect(st.size).toBe(manifest.volume_size);
    expect(st.blocks * 512).toBeLessThanOrEqual(chainBytes);
    expect(st.blocks * 512).toBeLessThan(st.size / 4);
  });
});
