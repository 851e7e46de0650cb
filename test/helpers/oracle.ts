/**
 * The independent oracle: replays a scenario as a chain of qcow2 overlays
 * and lets qemu do all the flattening. It shares only the Scenario types
 * and the byte generator with the builder, never its model, so agreement
 * between the two checks both.
 *
 * Mapping of engine operations onto overlays:
 * - write: `qemu-io write -s <pattern file>` (exact bytes) or `write -z`
 *   (zeros that hide the layers below, like the engine's allocated zeros).
 *   qemu copies-on-write unwritten parts of a cluster from below, which is
 *   the engine's read-modify-write content.
 * - snapshot / expand: the head overlay is frozen under the snapshot's file
 *   name and a new overlay (of the new size for expand) starts on top of
 *   it; qemu reads zeros past the end of a shorter backing file, as the
 *   engine does past the end of a shorter layer file.
 * - revert: a new overlay on the frozen overlay of the snapshot.
 * - trim: see OracleChain.trim.
 * Head file names follow the engine's last-digit rule, so the oracle's view
 * keys match the replica's file names.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { patternBytes } from './pattern';
import type { BackingSpec, Op, Scenario } from './replica-builder';

export interface Oracle {
  /** Layer file name as in the replica (`volume-head-003.img`, `volume-snap-x.img`) -> flattened raw image. */
  views: Map<string, string>;
}

export function buildOracle(s: Scenario, workDir: string): Oracle {
  const dir = fs.mkdtempSync(path.join(path.resolve(workDir), `oracle-${s.name}-`));
  if (/\s/.test(dir)) throw new Error(`qemu-io commands cannot carry the path ${dir}`);
  const bottom = s.backing ? buildBacking(dir, s.backing) : null;
  const chain = new OracleChain(dir, s.size, bottom);
  for (const op of s.ops) chain.apply(op);
  return { views: chain.flatten() };
}

interface Image {
  path: string;
  format: 'raw' | 'qcow2';
}

/** A write as it went into the head overlay; `bytes` null means `write -z`. */
interface HeadWrite {
  offset: number;
  length: number;
  bytes: Buffer | null;
}

interface Overlay {
  path: string;
  size: number;
  below: Image | null;
  /** Every write since this head was created, in order (trimmed ranges cut out). */
  writes: HeadWrite[];
}

const BLOCK = 4096;

class OracleChain {
  private head: Overlay;
  private headName = 'volume-head-000.img';
  private readonly frozen = new Map<string, Overlay>();
  private pending: HeadWrite[] = [];
  private serial = 0;

  constructor(
    private readonly dir: string,
    private size: number,
    bottom: Image | null,
  ) {
    this.head = this.overlay(bottom, size);
  }

  apply(op: Op): void {
    switch (op.op) {
      case 'write':
        this.pending.push({ offset: op.offset, length: op.length, bytes: op.data.kind === 'zero' ? null : patternBytes(op.data, op.length) });
        return;
      case 'snapshot':
        return this.snapshot(op.name, this.size);
      case 'expand':
        return this.snapshot(`expand-${op.size}`, op.size);
      case 'remove':
        // Only metadata changes; the removed snapshot keeps its overlay and view.
        if (!this.frozen.has(`volume-snap-${op.name}.img`)) throw new Error(`oracle: no snapshot ${op.name} to remove`);
        return;
      case 'revert':
        return this.revert(op.name);
      case 'trim':
        return this.trim(op.offset, op.length);
    }
  }

  /** Every view (head, every snapshot, off-chain and removed included) flattened to raw by qemu-img convert. */
  flatten(): Map<string, string> {
    this.flush();
    const out = path.join(this.dir, 'views');
    fs.mkdirSync(out);
    const views = new Map<string, string>();
    for (const [file, o] of [[this.headName, this.head] as const, ...this.frozen]) {
      const raw = path.join(out, `${file}.raw`);
      qemuImg(['convert', '-q', '-f', 'qcow2', '-O', 'raw', o.path, raw]);
      views.set(file, raw);
    }
    return views;
  }

  private snapshot(name: string, newSize: number): void {
    const file = `volume-snap-${name}.img`;
    if (this.frozen.has(file)) throw new Error(`oracle: snapshot ${name} already exists`);
    this.flush();
    this.frozen.set(file, this.head);
    this.size = newSize;
    this.head = this.overlay({ path: this.head.path, format: 'qcow2' }, newSize);
    this.headName = nextHead(this.headName);
  }

  private revert(name: string): void {
    const target = this.frozen.get(`volume-snap-${name}.img`);
    if (!target) throw new Error(`oracle: no snapshot ${name} to revert to`);
    this.flush();
    fs.rmSync(this.head.path);
    this.head = this.overlay({ path: target.path, format: 'qcow2' }, this.size);
    this.headName = nextHead(this.headName);
  }

  /**
   * Trim punches holes in the engine's head: the trimmed blocks then read
   * from the layer below. `qemu-io discard` cannot express that: qemu 7.2
   * turns a discarded cluster of an overlay into a zero cluster, which reads
   * zeros instead of falling through (tried: the trim scenario then fails),
   * and qemu has no "forget this range" for overlays. So the head overlay is
   * rebuilt: a fresh overlay on the same parent, replaying the head's writes
   * with the 4 KiB-aligned trimmed range cut out of each.
   *
   * Why the replay reproduces the engine's head exactly: the head's parent
   * never changes while it is the head, so every byte of a head block the
   * engine filled by read-modify-write came from the parent, and qemu's
   * copy-on-write fills the same bytes from the same parent. A block outside
   * the trimmed range keeps every write that touched it, in order, so it
   * ends with the same bytes; a block inside it keeps only writes made after
   * the trim, and is otherwise unallocated, i.e. falls through. (A partial
   * write into a trimmed block before the engine reopens would fill from
   * the engine's stale cache; the builder refuses that case.)
   */
  private trim(offset: number, length: number): void {
    this.flush();
    const t0 = Math.ceil(offset / BLOCK) * BLOCK;
    const t1 = Math.min(Math.floor((offset + length) / BLOCK) * BLOCK, this.size);
    if (t1 <= t0) return;
    const kept = this.head.writes.flatMap((w) => cutOut(w, t0, t1));
    fs.rmSync(this.head.path);
    this.head = this.overlay(this.head.below, this.size);
    this.pending = kept;
    this.flush();
  }

  /** Runs the pending writes on the head overlay in one qemu-io process. */
  private flush(): void {
    if (this.pending.length === 0) return;
    const cmds: string[] = [];
    for (const w of this.pending) {
      if (w.bytes === null) {
        cmds.push('-c', `write -z ${w.offset} ${w.length}`);
      } else {
        const src = path.join(this.dir, `data-${this.serial++}.bin`);
        fs.writeFileSync(src, w.bytes);
        cmds.push('-c', `write -s ${src} ${w.offset} ${w.length}`);
      }
    }
    qemuIo(this.head.path, 'qcow2', cmds);
    this.head.writes.push(...this.pending);
    this.pending = [];
  }

  private overlay(below: Image | null, size: number): Overlay {
    const file = path.join(this.dir, `layer-${this.serial++}.qcow2`);
    const backing = below ? ['-b', below.path, '-F', below.format] : [];
    qemuImg(['create', '-q', '-f', 'qcow2', ...backing, file, String(size)]);
    return { path: file, size, below, writes: [] };
  }
}

/** The parts of `w` outside [t0, t1). */
function cutOut(w: HeadWrite, t0: number, t1: number): HeadWrite[] {
  const end = w.offset + w.length;
  const pieces: HeadWrite[] = [];
  const piece = (from: number, to: number): void => {
    if (to <= from) return;
    const bytes = w.bytes === null ? null : w.bytes.subarray(from - w.offset, to - w.offset);
    pieces.push({ offset: from, length: to - from, bytes });
  };
  piece(w.offset, Math.min(end, t0));
  piece(Math.max(w.offset, t1), end);
  return pieces;
}

/** The engine's head naming: only the last digit of the old name counts (009 -> 010 -> 001). */
function nextHead(name: string): string {
  const digit = Number(name.charAt('volume-head-NNN'.length - 1));
  return `volume-head-${String(digit + 1).padStart(3, '0')}.img`;
}

/**
 * The oracle's own copy of the backing image, built only with qemu tools:
 * an empty image of the scenario's format, the writes through qemu-io, the
 * qcow2 zero writes with `write -z`, and for compress a `convert -c` pass.
 */
function buildBacking(dir: string, spec: BackingSpec): Image {
  const q = spec.qcow2 ?? {};
  const opts = spec.format === 'qcow2' ? ['-o', `cluster_size=${q.clusterSize ?? 65536},compat=${q.compat ?? '1.1'}`] : [];
  const file = path.join(dir, `backing.${spec.format}`);
  qemuImg(['create', '-q', '-f', spec.format, ...opts, file, String(spec.size)]);
  const cmds: string[] = [];
  spec.writes.forEach((w, i) => {
    const src = path.join(dir, `backing-data-${i}.bin`);
    fs.writeFileSync(src, patternBytes(w.data, w.length));
    cmds.push('-c', `write -s ${src} ${w.offset} ${w.length}`);
  });
  for (const z of q.zeroWrites ?? []) cmds.push('-c', `write -z ${z.offset} ${z.length}`);
  if (cmds.length > 0) qemuIo(file, spec.format, cmds);
  if (!q.compress) return { path: file, format: spec.format };
  const compressed = path.join(dir, 'backing-compressed.qcow2');
  qemuImg(['convert', '-q', '-c', '-f', 'qcow2', '-O', 'qcow2', ...opts, file, compressed]);
  return { path: compressed, format: 'qcow2' };
}

function qemuImg(args: string[]): void {
  execFileSync('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** qemu-io exits nonzero when a command fails; also check that every write reported success. */
function qemuIo(file: string, format: 'raw' | 'qcow2', cmds: string[]): void {
  const out = execFileSync('qemu-io', ['-f', format, ...cmds, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const wrote = out.split('\n').filter((l) => l.startsWith('wrote ')).length;
  if (wrote !== cmds.length / 2) throw new Error(`qemu-io on ${file}: ${wrote} of ${cmds.length / 2} writes succeeded:\n${out}`);
}
