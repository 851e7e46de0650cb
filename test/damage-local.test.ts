/**
 * Damage stays local (issue #10): a broken file fails only the views whose
 * own chain needs it, as the engine opens a snapshot by its own chain
 * (longhorn-engine pkg/replica OpenSnapshot); what is left in the directory
 * (other heads, layer files without a .meta, a corrupt volume.meta) stays
 * reachable. Expected bytes come from the qemu oracle (the same history as
 * qcow2 overlays, flattened by qemu), never from the code under test.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainfs } from './helpers/cli';
import { allocatedBlocks } from './helpers/extents';
import { mountReplica, unmount, unmountAll } from './helpers/mount';
import { buildOracle } from './helpers/oracle';
import { buildReplica, type BuiltReplica, type Scenario } from './helpers/replica-builder';
import { fingerprintTree } from './helpers/tree';
import { treeChanges } from './helpers/broken-replicas';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The chain: volume-snap-a1.img <- volume-snap-b2.img <- the head, a 1 MiB volume. */
const chainA1B2: Scenario = {
  name: 'damage', size: 1 * MiB, ops: [
    { op: 'write', offset: 0, length: 96 * KiB, data: { kind: 'seed', seed: 1 } },
    { op: 'snapshot', name: 'a1' },
    { op: 'write', offset: 64 * KiB, length: 64 * KiB, data: { kind: 'seed', seed: 2 } },
    { op: 'write', offset: 300 * KiB, length: 8 * KiB, data: { kind: 'zero' } },
    { op: 'snapshot', name: 'b2' },
    { op: 'write', offset: 32 * KiB, length: 5000, data: { kind: 'seed', seed: 3 } },
  ],
};

let tmp: string;
let oracle: Map<string, string>;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-damage-'));
  oracle = buildOracle(chainA1B2, tmp).views;
});
afterAll(() => {
  unmountAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Copies a layer file block by block, keeping its exact allocation (allocated zeros stay allocated). */
function copySparse(from: string, to: string): void {
  const bytes = fs.readFileSync(from);
  const fd = fs.openSync(to, 'w');
  try {
    fs.ftruncateSync(fd, bytes.length);
    for (const b of allocatedBlocks(from)) fs.writeSync(fd, bytes, b * 4096, Math.min(4096, bytes.length - b * 4096), b * 4096);
  } finally {
    fs.closeSync(fd);
  }
}

const expected = (file: string) => fs.readFileSync(oracle.get(file)!);
const A1 = 'volume-snap-a1.img';
const B2 = 'volume-snap-b2.img';

function stderrLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '');
}

/** Breaks a fresh replica, runs `check` on it, then checks that chainfs changed nothing in it. */
function withReplica<T>(breakIt: (r: BuiltReplica) => T, check: (r: BuiltReplica, t: T) => void): void {
  const r = buildReplica(chainA1B2, tmp);
  const t = breakIt(r);
  const before = fingerprintTree(r.root);
  check(r, t);
  expect(treeChanges(before, fingerprintTree(r.root))).toEqual([]);
}

describe('a broken head hides only the head view', () => {
  const breakings: [string, (r: BuiltReplica) => string][] = [
    ['the head is a directory', (r) => {
      const head = path.join(r.dir, r.model.head);
      fs.rmSync(head);
      fs.mkdirSync(head);
      return head;
    }],
    ['the head is missing', (r) => {
      const head = path.join(r.dir, r.model.head);
      fs.rmSync(head);
      return head;
    }],
    ["the head's .meta is missing", (r) => {
      fs.rmSync(path.join(r.dir, `${r.model.head}.meta`));
      return `${r.model.head}.meta is missing`;
    }],
  ];
  for (const [what, breakIt] of breakings) {
    it(`${what}: cat/export of b2 and a1 are exact, the head fails with one line, the mount serves the snapshots`, () => {
      withReplica(breakIt, (r, named) => {
        const head = chainfs(['cat', r.dir]);
        expect(head.code).toBe(1);
        expect(stderrLines(head.stderr)).toHaveLength(1);
        expect(head.stderr).toContain(named);
        for (const [snap, file] of [['b2', B2], ['a1', A1]]) {
          const c = chainfs(['cat', r.dir, '--snapshot', snap]);
          expect(c.code, c.stderr).toBe(0);
          expect(c.stdout.equals(expected(file)), `cat ${snap}`).toBe(true);
        }
        const out = path.join(tmp, `b2-${Math.random().toString(36).slice(2)}.img`);
        const ex = chainfs(['export', r.dir, out, '-s', 'b2', '--quiet']);
        expect(ex.code, ex.stderr).toBe(0);
        expect(fs.readFileSync(out).equals(expected(B2))).toBe(true);
        fs.rmSync(out);

        const insp = chainfs(['inspect', r.dir, '--json']);
        expect(insp.code, insp.stderr).toBe(0);
        const rep = JSON.parse(insp.stdout.toString());
        expect(rep.headProblem).toContain(named);
        expect(rep.snapshots.map((s: { name: string; problem?: string }) => [s.name, s.problem ?? null])).toEqual([['a1', null], ['b2', null]]);

        const mp = path.join(tmp, `mnt-${Math.random().toString(36).slice(2)}`);
        mountReplica(r.dir, mp);
        try {
          expect(fs.readdirSync(mp).sort()).toEqual(['chain.json', 'snapshots']);
          expect(fs.readFileSync(path.join(mp, 'snapshots', 'b2.img')).equals(expected(B2))).toBe(true);
          expect(fs.readFileSync(path.join(mp, 'snapshots', 'a1.img')).equals(expected(A1))).toBe(true);
          expect(JSON.parse(fs.readFileSync(path.join(mp, 'chain.json'), 'utf8')).headProblem).toContain(named);
        } finally {
          unmount(mp);
        }
      });
    });
  }
});

describe('a bad Parent link fails the views above it only', () => {
  it('b2.meta Parent "dummy.img": b2 and the head fail naming b2.meta; a1 is exact everywhere', () => {
    withReplica((r) => {
      const meta = path.join(r.dir, `${B2}.meta`);
      const o = JSON.parse(fs.readFileSync(meta, 'utf8'));
      fs.writeFileSync(meta, `${JSON.stringify({ ...o, Parent: 'dummy.img' })}\n`);
      return meta;
    }, (r, meta) => {
      for (const args of [[], ['--snapshot', 'b2']]) {
        for (const cmd of ['cat', 'map']) {
          const c = chainfs([cmd, r.dir, ...args]);
          expect(c.code).toBe(1);
          expect(stderrLines(c.stderr)).toHaveLength(1);
          expect(c.stderr).toContain(meta);
        }
      }
      const a1 = chainfs(['cat', r.dir, '--snapshot', 'a1']);
      expect(a1.code, a1.stderr).toBe(0);
      expect(a1.stdout.equals(expected(A1))).toBe(true);
      const map = chainfs(['map', r.dir, '--snapshot', 'a1', '--json']);
      expect(map.code, map.stderr).toBe(0);
      const mp = path.join(tmp, 'mnt-parent');
      mountReplica(r.dir, mp);
      try {
        expect(fs.readdirSync(path.join(mp, 'snapshots'))).toEqual(['a1.img']);
        expect(fs.existsSync(path.join(mp, 'volume.img'))).toBe(false);
        expect(fs.readFileSync(path.join(mp, 'snapshots', 'a1.img')).equals(expected(A1))).toBe(true);
      } finally {
        unmount(mp);
      }
    });
  });
});

describe('what is left in the directory stays reachable', () => {
  it('a second head file with its own .meta is reported and selectable (--head, heads/ in the mount)', () => {
    withReplica((r) => {
      // A copy of b2's view made into a head (as a failed snapshot leaves one): parent a1, b2's data.
      const other = 'volume-head-007.img';
      copySparse(path.join(r.dir, B2), path.join(r.dir, other));
      const m = JSON.parse(fs.readFileSync(path.join(r.dir, `${B2}.meta`), 'utf8'));
      fs.writeFileSync(path.join(r.dir, `${other}.meta`), `${JSON.stringify({ ...m, Name: other })}\n`);
      return other;
    }, (r, other) => {
      const rep = JSON.parse(chainfs(['inspect', r.dir, '--json']).stdout.toString());
      expect(rep.heads.map((h: { file: string; chain: string[] }) => [h.file, h.chain])).toEqual([[other, [other, A1]]]);
      const c = chainfs(['cat', r.dir, '--head', other]);
      expect(c.code, c.stderr).toBe(0);
      expect(c.stdout.equals(expected(B2))).toBe(true);
      const mp = path.join(tmp, 'mnt-heads');
      mountReplica(r.dir, mp);
      try {
        expect(fs.readFileSync(path.join(mp, 'heads', other)).equals(expected(B2))).toBe(true);
        expect(fs.readFileSync(path.join(mp, 'volume.img')).equals(expected(r.model.head))).toBe(true);
      } finally {
        unmount(mp);
      }
    });
  });

  it('layer files without a .meta are listed as orphans, in no chain', () => {
    withReplica((r) => fs.writeFileSync(path.join(r.dir, 'volume-snap-half.img'), Buffer.alloc(8192, 7)), (r) => {
      const rep = JSON.parse(chainfs(['inspect', r.dir, '--json']).stdout.toString());
      expect(rep.orphans).toEqual([{ file: 'volume-snap-half.img', size: 8192, allocatedBytes: 8192 }]);
      expect(chainfs(['inspect', r.dir]).stdout.toString()).toMatch(/without a \.meta[\s\S]*volume-snap-half\.img/);
      const c = chainfs(['cat', r.dir]);
      expect(c.code, c.stderr).toBe(0);
      expect(c.stdout.equals(expected(r.model.head))).toBe(true);
    });
  });

  it('a NUL-filled volume.meta: the error hints at --recover-volume-meta, which recovers in memory', () => {
    withReplica((r) => fs.writeFileSync(path.join(r.dir, 'volume.meta'), Buffer.alloc(120)), (r) => {
      const bad = chainfs(['cat', r.dir]);
      expect(bad.code).toBe(1);
      expect(stderrLines(bad.stderr)).toHaveLength(1);
      expect(bad.stderr).toMatch(/volume\.meta: invalid JSON.*--recover-volume-meta/);
      const ok = chainfs(['cat', r.dir, '--recover-volume-meta']);
      expect(ok.code, ok.stderr).toBe(0);
      expect(stderrLines(ok.stderr)).toEqual([expect.stringMatching(/warning: .*volume\.meta: corrupt \(--recover-volume-meta\); recovered in memory/)]);
      expect(ok.stdout.equals(expected(r.model.head))).toBe(true);
    });
  });

  it('a removed snapshot selected as a view says so', () => {
    const s: Scenario = { ...chainA1B2, name: 'removed', ops: [...chainA1B2.ops, { op: 'remove', name: 'a1' }] };
    const r = buildReplica(s, tmp);
    const c = chainfs(['cat', r.dir, '--snapshot', 'a1']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stderr).toMatch(/warning: .*volume-snap-a1\.img: snapshot a1 is marked Removed/);
  });
});

describe('warnings about the data itself', () => {
  it('a backing image larger than the volume: the view is cut at the volume size, and inspect says so', () => {
    const s: Scenario = {
      name: 'bigbacking', size: 1 * MiB,
      backing: { format: 'raw', size: 1 * MiB, writes: [{ offset: 0, length: 64 * KiB, data: { kind: 'seed', seed: 9 } }] },
      ops: [{ op: 'write', offset: 0, length: 4 * KiB, data: { kind: 'seed', seed: 8 } }],
    };
    const r = buildReplica(s, tmp);
    const want = chainfs(['cat', r.dir]).stdout;
    fs.truncateSync(r.backingPath!, 2 * MiB); // the image now holds (zero) bytes past the volume's end
    const c = chainfs(['cat', r.dir]);
    expect(c.stdout.length).toBe(1 * MiB);
    expect(c.stdout.equals(want)).toBe(true);
    const rep = JSON.parse(chainfs(['inspect', r.dir, '--json']).stdout.toString());
    expect(rep.warnings.map((w: { message: string }) => w.message).join('\n')).toMatch(/virtual size 2097152 is larger than the volume \(1048576\)/);
  });

  it('a layer above the bottom allocated end to end among sparse ones: a hint about hole-filling copies', () => {
    withReplica((r) => {
      // What `cp` without --sparse or scp would make of b2: every hole filled.
      const p = path.join(r.dir, B2);
      const bytes = fs.readFileSync(p);
      fs.rmSync(p);
      fs.writeFileSync(p, bytes);
    }, (r) => {
      const rep = JSON.parse(chainfs(['inspect', r.dir, '--json']).stdout.toString());
      expect(rep.warnings.map((w: { message: string }) => w.message).join('\n')).toMatch(/volume-snap-b2\.img: allocated end to end while other layers are sparse.*tar --sparse/);
    });
  });
});
