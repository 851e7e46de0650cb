/**
 * The lvol layer: what the mount's C read path preads (mapDirect) equals
 * what `read` gives; chains equal qemu's reading of the same history as
 * qcow2 overlays with 1 MiB clusters (a snapshot freezes the overlay and a
 * new one goes on top; a clone is an overlay on the snapshot; deleting a
 * snapshot rebases its child onto its parent).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSpdk } from '../src/source/spdk/open';
import type { Layer } from '../src/layer/layer';
import { MiB, SpdkDiskBuilder, type Op } from './helpers/spdk-builder';
import { REP_A, chainScenario, deletedMiddleScenario, expansionScenario, revertScenario, twoVolumesScenario } from './helpers/spdk-scenarios';
import { qemuImg, qemuIo } from './helpers/qemu';
import { readView } from './helpers/spdk-oracle';

let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-l-')); });
afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });

/** Reads [pos, pos+len) of a layer as the C read path does: pread each mapDirect piece (`read` where fd is -1). */
function readDirect(layer: Layer, pos: number, len: number): Buffer {
  const out = Buffer.alloc(len);
  let covered = pos;
  layer.mapDirect!(pos, len, (off, n, fd, delta, fileEnd) => {
    expect(off).toBe(covered);
    covered += n;
    if (fd < 0) { layer.read(out, off - pos, n, off); return; }
    const inFile = Math.max(0, Math.min(n, fileEnd - (off + delta)));
    fs.readSync(fd, out, off - pos, inFile, off + delta);
  });
  expect(covered).toBe(pos + len);
  return out;
}

describe('lvol layer', () => {
  it('mapDirect places every byte where read finds it, across clusters and device-contiguous runs', async () => {
    const b = new SpdkDiskBuilder();
    twoVolumesScenario(b);
    const file = path.join(dir, 'direct.img');
    b.build(file);
    const cat = openSpdk([file]);
    const ranges = [[0, 8 * MiB], [MiB - 100, 300], [3 * MiB + 7, 2 * MiB + 11], [7 * MiB, MiB], [MiB - 1, MiB + 2]];
    for (const v of cat.views()) {
      const o = await v.open({});
      for (const layer of o.chain.layers) {
        for (const [pos, len] of ranges) {
          if (pos >= layer.size) continue;
          const n = Math.min(len, layer.size - pos);
          const want = Buffer.alloc(n);
          layer.read(want, 0, n, pos);
          expect(readDirect(layer, pos, n).equals(want), `${layer.name} ${pos}+${n}`).toBe(true);
        }
      }
    }
    const l = (await cat.select({ lvol: REP_A }).open({})).chain.layers[0];
    expect(l.blockStatus(0, 1)).toEqual({ kind: 'absent', length: MiB }); // a's head has cluster 2 only
    expect(l.blockStatus(2 * MiB + 5, 1)).toEqual({ kind: 'data', length: MiB - 5 });
    expect(l.blockStatus(8 * MiB, 10).kind).toBe('zero');
    cat.close();
  });
});

/** Replays the writer's history with qemu: each lvol a qcow2 file (1 MiB clusters). Returns lvol id → file. */
function qemuReplay(ops: Op[], where: string): Map<number, string> {
  const files = new Map<number, string>();
  const parentOf = new Map<number, number | undefined>();
  let k = 0;
  const fresh = (size: number, backing?: string) => {
    const f = path.join(where, `q${k++}.qcow2`);
    const args = ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1M'];
    if (backing) args.push('-b', backing, '-F', 'qcow2');
    qemuImg([...args, f, String(size)]);
    return f;
  };
  const sizeOf = (f: string) => JSON.parse(qemuImg(['info', '--output=json', f]))['virtual-size'] as number;
  for (const op of ops) {
    if (op.op === 'create') { files.set(op.id, fresh(op.size)); parentOf.set(op.id, undefined); }
    else if (op.op === 'write') {
      const tmp = path.join(where, 'w.bin');
      fs.writeFileSync(tmp, op.data);
      qemuIo(files.get(op.id)!, 'qcow2', [`write -q -s ${tmp} ${op.offset} ${op.data.length}`]);
    } else if (op.op === 'snapshot') {
      const f = files.get(op.origin)!;
      files.set(op.snap, f);
      parentOf.set(op.snap, parentOf.get(op.origin));
      files.set(op.origin, fresh(sizeOf(f), f));
      parentOf.set(op.origin, op.snap);
    } else if (op.op === 'clone') {
      const f = files.get(op.snap)!;
      files.set(op.id, fresh(sizeOf(f), f));
      parentOf.set(op.id, op.snap);
    } else if (op.op === 'resize') qemuImg(['resize', '-q', '-f', 'qcow2', files.get(op.id)!, String(op.size)]);
    else if (op.op === 'delete') {
      const child = [...parentOf].find(([, p]) => p === op.id)?.[0];
      if (child !== undefined) {
        const grand = parentOf.get(op.id);
        qemuImg(['rebase', '-q', '-f', 'qcow2', '-b', grand === undefined ? '' : files.get(grand)!, ...(grand === undefined ? [] : ['-F', 'qcow2']), files.get(child)!]);
        parentOf.set(child, grand);
      }
      files.delete(op.id);
      parentOf.delete(op.id);
    }
  }
  return files;
}

describe.each([
  ['a chain', chainScenario],
  ['a deleted middle snapshot', deletedMiddleScenario],
  ['a revert', revertScenario],
  ['an expansion', expansionScenario],
])('qemu reads %s as chainfs does', (_name, scenario) => {
  it('every lvol equals qemu-img convert of its qcow2 overlay', async () => {
    const b = new SpdkDiskBuilder();
    scenario(b);
    const where = fs.mkdtempSync(path.join(dir, 'q-'));
    const img = path.join(where, 'disk.img');
    b.build(img);
    const files = qemuReplay(b.ops, where);
    const cat = openSpdk([img]);
    for (const m of b.blobs.values()) {
      const raw = path.join(where, 'out.raw');
      qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', files.get(m.id)!, raw]);
      const ours = await readView(cat.view(`lvols/${m.name}.img`)!);
      expect(ours.equals(fs.readFileSync(raw)), m.name).toBe(true);
    }
    expect(b.blobs.size).toBeGreaterThanOrEqual(2);
    cat.close();
  });
});
