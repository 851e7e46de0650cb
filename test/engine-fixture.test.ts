/**
 * A replica written by Longhorn's own engine (v1.4.4): every view must match
 * the SHA-256 the engine's ReadAt gave on a fresh read-only open, both via
 * the real CLI and via library reads at random (unaligned) offsets; and the
 * replica directory must be byte-for-byte untouched afterwards.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LayerSet } from '../src/source/replica/layers';
import { Replica } from '../src/source/replica/replica';
import { chainfsOk } from './helpers/cli';
import { fingerprintTree } from './helpers/tree';

const FIXTURE = path.join(__dirname, 'fixtures', 'engine-v1.4.4', 'chain-basic');
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let tmp: string;
let dir: string;
let before: ReturnType<typeof fingerprintTree>;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-engine-'));
  execFileSync('tar', ['-xzf', path.join(FIXTURE, 'chain-basic.tar.gz'), '-C', tmp]);
  dir = path.join(tmp, manifest.replica_dir);
  before = fingerprintTree(dir);
});

afterAll(() => {
  if (dir) expect(fingerprintTree(dir)).toEqual(before);
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('engine v1.4.4 fixture chain-basic', () => {
  it('the archive kept holes and allocated zero blocks (extents as the engine left them)', () => {
    for (const f of manifest.files_after_generation) {
      if (!f.data_extents) continue;
      const st = fs.statSync(path.join(dir, f.name));
      expect(st.size, f.name).toBe(f.apparent_size);
      expect(st.blocks * 512, f.name).toBe(f.allocated_bytes);
    }
  });

  for (const v of manifest.expected_views) {
    const label = v.snapshot_name ? `snapshot ${v.snapshot_name}` : 'head';
    it(`chainfs cat of the ${label} equals the engine's bytes`, () => {
      const args = ['cat', dir, ...(v.snapshot_name ? ['--snapshot', v.snapshot_name] : [])];
      const out = chainfsOk(args);
      const chunks: string[] = [];
      for (let o = 0; o < out.length; o += 1 << 20) chunks.push(sha256(out.subarray(o, o + (1 << 20))));
      expect(chunks).toEqual(v.chunk_sha256_1MiB); // locates a mismatch to the MiB
      expect(sha256(out)).toBe(v.sha256);
    });
  }

  it('inspect --json shows the chain the engine reported', () => {
    const rep = JSON.parse(chainfsOk(['inspect', '--json', dir]).toString());
    expect(rep.size).toBe(manifest.volume_size);
    expect(rep.head).toBe(manifest.head);
    expect(rep.chain.map((d: { file: string }) => d.file)).toEqual(manifest.head_chain_head_first);
    expect(rep.backing).toBeNull();
    // Name in a snapshot's .meta is the old head's name (longhorn#13728): we must not use it.
    expect(rep.chain[3].name).toBe('a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d');
  });

  it('library reads at random unaligned offsets equal the flat view', () => {
    const flat = chainfsOk(['cat', dir]);
    const layers = new LayerSet(Replica.open(dir));
    try {
      const chain = layers.view(undefined, { cacheBytes: 1 << 20 }).chain;
      let seed = 12345;
      const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
      for (let i = 0; i < 2000; i++) {
        const len = 1 + rnd(i % 10 === 0 ? 300_000 : 9000);
        const pos = rnd(flat.length - len + 1);
        const buf = Buffer.alloc(len, 0xee);
        chain.read(buf, 0, len, pos);
        if (!buf.equals(flat.subarray(pos, pos + len))) throw new Error(`mismatch at ${pos}+${len}`);
      }
    } finally {
      layers.close();
    }
  });
});
