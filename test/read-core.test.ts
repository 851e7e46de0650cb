/**
 * The read core against the independent qemu oracle, for every scenario:
 * `chainfs cat` of every view (head, snapshots, off-chain and removed ones)
 * equals `qemu-img convert -O raw` of the same history built as qcow2
 * overlays; library reads at random unaligned offsets agree; `map` covers
 * the view exactly and its data runs hold the view's non-zero bytes;
 * `inspect --json` describes the chain.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LayerSet } from '../src/source/replica/layers';
import { Replica } from '../src/source/replica/replica';
import { chainfsOk } from './helpers/cli';
import { buildOracle, type Oracle } from './helpers/oracle';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { SCENARIOS } from './helpers/scenarios';
import { fingerprintTree } from './helpers/tree';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-read-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.each(SCENARIOS.map((s) => [s.name, s] as const))('%s', (_name, scenario) => {
  let built: BuiltReplica;
  let oracle: Oracle;
  let before: ReturnType<typeof fingerprintTree>;

  beforeAll(() => {
    built = buildReplica(scenario, tmp);
    oracle = buildOracle(scenario, tmp);
    before = fingerprintTree(built.root);
  });
  afterAll(() => expect(fingerprintTree(built.root)).toEqual(before));

  it('chainfs cat of every view equals the oracle', () => {
    for (const v of built.views) {
      const out = chainfsOk(['cat', built.dir, ...(v.snapshot !== undefined ? ['--snapshot', v.snapshot] : [])]);
      const want = fs.readFileSync(oracle.views.get(v.file)!);
      expect(out.length, v.file).toBe(want.length);
      expect(out.equals(want), `${v.file} differs from the oracle`).toBe(true);
    }
  });

  it('library reads at random unaligned offsets equal the oracle, with a tiny cache', () => {
    const layers = new LayerSet(Replica.open(built.dir));
    try {
      let seed = 7;
      const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
      for (const v of built.views) {
        const want = fs.readFileSync(oracle.views.get(v.file)!);
        const chain = layers.view(v.snapshot, { cacheBytes: 1 }).chain;
        for (let i = 0; i < 200; i++) {
          const len = 1 + rnd(i % 7 === 0 ? 1 << 20 : 10_000);
          const pos = rnd(want.length - len + 1);
          const b = Buffer.alloc(len, 0xee);
          chain.read(b, 0, len, pos);
          if (!b.equals(want.subarray(pos, pos + len))) throw new Error(`${v.file}: mismatch at ${pos}+${len}`);
        }
      }
    } finally {
      layers.close();
    }
  });

  it('map --json tiles the view and zero runs really are zeros', () => {
    for (const v of built.views) {
      const runs = JSON.parse(chainfsOk(['map', '--json', built.dir, ...(v.snapshot !== undefined ? ['-s', v.snapshot] : [])]).toString());
      const want = fs.readFileSync(oracle.views.get(v.file)!);
      let pos = 0;
      for (const r of runs) {
        expect(r.start).toBe(pos);
        expect(r.length).toBeGreaterThan(0);
        if (r.zero) expect(want.subarray(r.start, r.start + r.length).equals(Buffer.alloc(r.length)), `${v.file} zero run at ${r.start}`).toBe(true);
        else expect(typeof r.file).toBe('string');
        pos += r.length;
      }
      expect(pos).toBe(v.size);
    }
  });

  it('inspect --json lists the chain head first and every snapshot', () => {
    const rep = JSON.parse(chainfsOk(['inspect', '--json', built.dir]).toString());
    const head = built.views[0];
    expect(rep.head).toBe(head.file);
    expect(rep.chain[0].file).toBe(head.file);
    for (let i = 0; i + 1 < rep.chain.length; i++) expect(rep.chain[i].parent).toBe(rep.chain[i + 1].file);
    expect(rep.chain[rep.chain.length - 1].parent).toBe('');
    const snaps = built.views.filter((v) => v.snapshot !== undefined);
    expect(rep.snapshots.map((s: { name: string }) => s.name).sort()).toEqual(snaps.map((s) => s.snapshot).sort());
    for (const s of snaps) {
      const r = rep.snapshots.find((x: { name: string }) => x.name === s.snapshot);
      expect(r.inChain, s.file).toBe(s.onHeadChain);
      expect(r.removed, s.file).toBe(s.removed);
    }
    expect(rep.backing === null).toBe(scenario.backing === undefined);
    if (scenario.backing) expect(rep.backing.format).toBe(scenario.backing.format);
  });
});

describe('a backing image linked into place (a copied tree)', () => {
  it('is followed, as the engine follows it, and reads like the original', () => {
    const scenario = SCENARIOS.find((s) => s.backing?.format === 'raw')!;
    const built = buildReplica(scenario, tmp);
    const oracle = buildOracle(scenario, tmp);
    const elsewhere = path.join(tmp, `moved-backing-${process.pid}`);
    fs.renameSync(built.backingPath!, elsewhere);
    fs.symlinkSync(elsewhere, built.backingPath!);
    const out = chainfsOk(['cat', built.dir]);
    expect(out.equals(fs.readFileSync(oracle.views.get(built.views[0].file)!))).toBe(true);
    const rep = JSON.parse(chainfsOk(['inspect', '--json', built.dir]).toString());
    expect(rep.backing.path).toBe(elsewhere);
  });
});
