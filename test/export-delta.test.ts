/**
 * Exports that carry only what changed (issue #15): qcow2 overlays over an
 * earlier full export (`--since A --backing BASE`), raw deltas, and qcow2
 * streamed to a pipe. qemu is the judge: `qemu-img compare` against the
 * oracle's flattened view (the same history as qcow2 overlays, flattened by
 * qemu), `qemu-img check`, `qemu-img rebase`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHAINFS, chainfs } from './helpers/cli';
import { allocatedBlocks } from './helpers/extents';
import { buildOracle } from './helpers/oracle';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { noBacking, rawBacking } from './helpers/scenarios';

let tmp: string;
beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-delta-')); });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function qemu(args: string[]): { code: number; out: string } {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function ok(args: string[]): void {
  const r = chainfs(args);
  expect(r.code, r.stderr).toBe(0);
}

/** Data clusters qemu says the overlay itself holds (depth 0). */
function ownClusters(file: string): number {
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', file], { encoding: 'utf8' })) as { start: number; length: number; depth: number; data: boolean; zero: boolean }[];
  return map.filter((e) => e.depth === 0 && (e.data || e.zero)).reduce((n, e) => n + e.length, 0) / 65536;
}

describe.each([noBacking, rawBacking].map((s) => [s.name, s] as const))('%s', (_n, s) => {
  let r: BuiltReplica;
  let oracle: Map<string, string>;
  let work: string;
  beforeAll(() => {
    r = buildReplica(s, tmp);
    oracle = buildOracle(s, tmp).views;
    work = fs.mkdtempSync(path.join(tmp, `${s.name}-out-`));
  });

  it('an overlay per snapshot: identical to the head by qemu-img compare, clean by check, only the changed clusters, rebase works', () => {
    const head = oracle.get(r.views[0].file)!;
    const snaps = r.views.filter((v) => v.snapshot && v.onHeadChain);
    expect(snaps.length).toBeGreaterThan(0);
    for (const snap of snaps) {
      const base = path.join(work, `base-${snap.snapshot}.raw`);
      ok(['export', r.dir, base, '--snapshot', snap.snapshot!, '-q']);
      const ov = path.join(work, `ov-${snap.snapshot}.qcow2`);
      // BASE given relative to the working directory, recorded relative to the overlay.
      ok(['export', r.dir, ov, '--format', 'qcow2', '--since', snap.snapshot!, '--backing', path.relative(process.cwd(), base), '-q']);
      expect(qemu(['check', ov]).code, qemu(['check', ov]).out).toBe(0);
      expect(qemu(['compare', '-F', 'raw', ov, head])).toEqual({ code: 0, out: 'Images are identical.\n' });
      expect(JSON.parse(execFileSync('qemu-img', ['info', '--output=json', ov], { encoding: 'utf8' }))['backing-filename']).toBe(path.basename(base));
      // Only the changed clusters: no more than diff names (64 KiB clusters).
      const d = chainfs(['diff', r.dir, '--from', snap.snapshot!, '--json']);
      const changed = new Set<number>();
      for (const x of JSON.parse(d.stdout.toString()) as { start: number; length: number }[]) {
        for (let c = Math.floor(x.start / 65536); c < Math.ceil((x.start + x.length) / 65536); c++) changed.add(c);
      }
      expect(ownClusters(ov)).toBeLessThanOrEqual(changed.size);
      // qemu-img rebase onto nothing pulls the backing file's data in: still the head.
      const copy = path.join(work, `rebased-${snap.snapshot}.qcow2`);
      fs.copyFileSync(ov, copy);
      expect(qemu(['rebase', '-b', '', '-f', 'qcow2', copy]).code).toBe(0);
      expect(qemu(['compare', '-F', 'raw', copy, head]).code).toBe(0);
    }
  });

  it('a BASE that is not the --since view is refused, and nothing is written', () => {
    const snaps = r.views.filter((v) => v.snapshot && v.onHeadChain);
    const wrong = path.join(work, 'wrong-base.raw');
    ok(['export', r.dir, wrong, '-q']); // the head, not a snapshot
    const ov = path.join(work, 'refused.qcow2');
    const res = chainfs(['export', r.dir, ov, '--format', 'qcow2', '--since', snaps[0].snapshot!, '--backing', wrong, '-q']);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/wrong-base\.raw: differs from snapshots\/.* at offset \d+: not an export of/);
    expect(fs.existsSync(ov)).toBe(false);
  });

  it('a raw delta allocates only the changed ranges, and holds the head there', () => {
    const snap = r.views.find((v) => v.snapshot && v.onHeadChain)!;
    const delta = path.join(work, 'delta.raw');
    ok(['export', r.dir, delta, '--since', snap.snapshot!, '-q']);
    const d = JSON.parse(chainfs(['diff', r.dir, '--from', snap.snapshot!, '--json']).stdout.toString()) as { start: number; length: number }[];
    const inDiff = (b: number) => d.some((x) => b * 4096 >= x.start && b * 4096 < x.start + x.length);
    const blocks = allocatedBlocks(delta);
    expect(blocks.filter((b) => !inDiff(b))).toEqual([]);
    const head = fs.readFileSync(oracle.get(r.views[0].file)!);
    const bytes = fs.readFileSync(delta);
    for (const b of blocks) expect(bytes.subarray(b * 4096, b * 4096 + 4096).equals(head.subarray(b * 4096, b * 4096 + 4096))).toBe(true);
  });

  it('a qcow2 streamed to a slow pipe: clean, identical to the head, and to the same export written to a file', () => {
    const head = oracle.get(r.views[0].file)!;
    const streamed = path.join(work, 'streamed.qcow2');
    // The reader sleeps before reading: the writer must wait on a full pipe, not fail or drop bytes.
    execFileSync('bash', ['-c', `"${CHAINFS}" export "${r.dir}" - --format qcow2 -q | (sleep 1; cat > "${streamed}")`]);
    expect(qemu(['check', streamed]).code).toBe(0);
    expect(qemu(['compare', '-F', 'raw', streamed, head]).code).toBe(0);
    const file = path.join(work, 'file.qcow2');
    ok(['export', r.dir, file, '--format', 'qcow2', '-q']);
    expect(qemu(['compare', streamed, file]).code).toBe(0);
    // And an overlay streamed the same way.
    const snap = r.views.find((v) => v.snapshot && v.onHeadChain)!;
    const base = path.join(work, 'stream-base.raw');
    ok(['export', r.dir, base, '--snapshot', snap.snapshot!, '-q']);
    const ov = path.join(work, 'stream-ov.qcow2');
    execFileSync('bash', ['-c', `cd "${work}" && "${CHAINFS}" export "${r.dir}" - --format qcow2 --since "${snap.snapshot}" --backing stream-base.raw -q > "${ov}"`]);
    expect(qemu(['check', ov]).code).toBe(0);
    expect(qemu(['compare', '-F', 'raw', ov, head]).code).toBe(0);
  });
});
