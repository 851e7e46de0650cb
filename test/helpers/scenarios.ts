/**
 * Ready-made replica histories for tests to iterate over. Each is small
 * (8-16 MiB volumes) so the whole set, with its qemu oracle, builds in a
 * few seconds. Build one with buildReplica(s, tmp) and its expected views
 * with buildOracle(s, tmp).
 */
import type { Scenario } from './replica-builder';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Several snapshots, zero overwrites, sub-4K and block-straddling writes, no backing image. */
export const noBacking: Scenario = {
  name: 'no-backing',
  size: 16 * MiB,
  ops: [
    { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed: 1 } },
    { op: 'write', offset: 1 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 2 } },
    { op: 'write', offset: 5 * MiB + 512, length: 10000, data: { kind: 'seed', seed: 3 } },
    { op: 'write', offset: 16 * MiB - 8 * KiB, length: 8 * KiB, data: { kind: 'seed', seed: 4 } },
    { op: 'snapshot', name: 'a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d', userCreated: false },
    { op: 'write', offset: 8 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 5 } },
    { op: 'write', offset: 1 * MiB, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 5 * MiB + 4096 - 50, length: 100, data: { kind: 'seed', seed: 6 } },
    { op: 'write', offset: 8 * MiB, length: 256 * KiB, data: { kind: 'seed', seed: 7 } },
    { op: 'snapshot', name: 'user-snap-2', labels: { purpose: 'ground-truth', by: 'lhgen' }, created: '2024-05-01T10:05:00Z' },
    { op: 'write', offset: 7, length: 1, data: { kind: 'seed', seed: 8 } },
    { op: 'write', offset: 10 * MiB - 2 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 9 } },
    { op: 'write', offset: 8 * MiB + 64 * KiB, length: 64 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 12 * MiB + 100, length: 5000, data: { kind: 'byte', value: 0xab } },
    { op: 'snapshot', name: 'c5d6e7f8-0912-4345-a6b7-c8d9e0f1a2b3', userCreated: false },
    { op: 'write', offset: 0, length: 4 * KiB, data: { kind: 'seed', seed: 10 } },
    { op: 'write', offset: 200, length: 100, data: { kind: 'zero' } },
    { op: 'write', offset: 12 * MiB, length: 1 * MiB, data: { kind: 'seed', seed: 11 } },
    { op: 'write', offset: 8 * MiB + 100, length: 3000, data: { kind: 'seed', seed: 12 } },
    { op: 'write', offset: 16 * MiB - 4 * KiB - 5, length: 10, data: { kind: 'seed', seed: 13 } },
  ],
};

/** A raw backing image shorter than the volume (not even 4 KiB-aligned at its end) and with holes. */
export const rawBacking: Scenario = {
  name: 'raw-backing',
  size: 16 * MiB,
  backing: {
    format: 'raw',
    size: 6 * MiB + 512,
    writes: [
      { offset: 0, length: 128 * KiB, data: { kind: 'seed', seed: 101 } },
      { offset: 2 * MiB + 1000, length: 70000, data: { kind: 'seed', seed: 102 } },
      { offset: 6 * MiB + 512 - 1000, length: 1000, data: { kind: 'seed', seed: 103 } },
    ],
  },
  ops: [
    { op: 'write', offset: 4096 + 10, length: 100, data: { kind: 'seed', seed: 21 } },
    { op: 'write', offset: 1 * MiB, length: 8 * KiB, data: { kind: 'seed', seed: 22 } },
    { op: 'write', offset: 6 * MiB - 20, length: 40, data: { kind: 'seed', seed: 23 } },
    { op: 'write', offset: 6 * MiB + 612, length: 50, data: { kind: 'seed', seed: 24 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 2 * MiB, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 2 * MiB + 70000, length: 3, data: { kind: 'seed', seed: 25 } },
    { op: 'write', offset: 15 * MiB, length: 64 * KiB, data: { kind: 'seed', seed: 26 } },
    { op: 'snapshot', name: 's2' },
    { op: 'write', offset: 64 * KiB, length: 128 * KiB, data: { kind: 'byte', value: 0x5a } },
    { op: 'write', offset: 6 * MiB + 4096, length: 4 * KiB, data: { kind: 'zero' } },
  ],
};

/** A qcow2 backing image (64 KiB clusters) with zero clusters made by qemu-io write -z, with and without a host cluster. */
export const qcow2Backing: Scenario = {
  name: 'qcow2-backing',
  size: 12 * MiB,
  backing: {
    format: 'qcow2',
    size: 8 * MiB,
    writes: [
      { offset: 0, length: 512 * KiB, data: { kind: 'seed', seed: 201 } },
      { offset: 1 * MiB, length: 200 * KiB, data: { kind: 'seed', seed: 202 } },
      { offset: 3 * MiB + 7, length: 5000, data: { kind: 'byte', value: 0x11 } },
    ],
    qcow2: {
      clusterSize: 64 * KiB,
      compat: '1.1',
      zeroWrites: [
        { offset: 128 * KiB, length: 64 * KiB }, // over data: zero cluster that keeps its host cluster
        { offset: 4 * MiB, length: 128 * KiB }, // over nothing: zero clusters without a host offset
        { offset: 1 * MiB + 70000, length: 10000 }, // inside a cluster: explicit zeros
      ],
    },
  },
  ops: [
    { op: 'write', offset: 128 * KiB + 100, length: 200, data: { kind: 'seed', seed: 31 } },
    { op: 'write', offset: 4 * MiB + 4096 - 10, length: 20, data: { kind: 'seed', seed: 32 } },
    { op: 'write', offset: 1 * MiB + 68000, length: 4096, data: { kind: 'seed', seed: 33 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 0, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 8 * MiB - 100, length: 200, data: { kind: 'seed', seed: 34 } },
    { op: 'write', offset: 10 * MiB, length: 100 * KiB, data: { kind: 'seed', seed: 35 } },
    { op: 'snapshot', name: 's2', userCreated: false, labels: {} },
    { op: 'write', offset: 256 * KiB + 1, length: 1, data: { kind: 'seed', seed: 36 } },
  ],
};

/** A qcow2 backing image written by `qemu-img convert -c`: compressed clusters next to incompressible ones. */
export const qcow2CompressedBacking: Scenario = {
  name: 'qcow2-compressed-backing',
  size: 16 * MiB,
  backing: {
    format: 'qcow2',
    size: 8 * MiB,
    writes: [
      { offset: 0, length: 1 * MiB, data: { kind: 'byte', value: 0x61 } },
      { offset: 1 * MiB + 4096, length: 4096, data: { kind: 'seed', seed: 301 } },
      { offset: 2 * MiB, length: 256 * KiB, data: { kind: 'seed', seed: 302 } },
      { offset: 4 * MiB, length: 300 * KiB, data: { kind: 'byte', value: 0x62 } },
      { offset: 7 * MiB + 123, length: 5000, data: { kind: 'seed', seed: 303 } },
    ],
    qcow2: { compress: true },
  },
  ops: [
    { op: 'write', offset: 100, length: 50, data: { kind: 'seed', seed: 41 } },
    { op: 'write', offset: 1 * MiB + 4000, length: 200, data: { kind: 'seed', seed: 42 } },
    { op: 'write', offset: 2 * MiB + 64 * KiB, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 4 * MiB + 300 * KiB - 10, length: 20, data: { kind: 'seed', seed: 43 } },
    { op: 'write', offset: 9 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 44 } },
  ],
};

/** Two expansions: older snapshot files are shorter than the volume, and writes straddle the old ends. */
export const expand: Scenario = {
  name: 'expand',
  size: 8 * MiB,
  ops: [
    { op: 'write', offset: 0, length: 8 * KiB, data: { kind: 'seed', seed: 51 } },
    { op: 'write', offset: 8 * MiB - 4 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 52 } },
    { op: 'snapshot', name: 'a' },
    { op: 'write', offset: 8 * MiB - 100, length: 100, data: { kind: 'seed', seed: 53 } },
    { op: 'expand', size: 12 * MiB },
    { op: 'write', offset: 8 * MiB - 50, length: 100, data: { kind: 'seed', seed: 54 } },
    { op: 'write', offset: 11 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 55 } },
    { op: 'snapshot', name: 'b' },
    { op: 'expand', size: 16 * MiB },
    { op: 'write', offset: 12 * MiB - 4 * KiB, length: 8 * KiB, data: { kind: 'seed', seed: 56 } },
    { op: 'write', offset: 4 * KiB, length: 4 * KiB, data: { kind: 'zero' } },
  ],
};

/** A revert to an older snapshot: the later snapshots stay on disk as an off-chain branch. */
export const revert: Scenario = {
  name: 'revert',
  size: 8 * MiB,
  ops: [
    { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed: 61 } },
    { op: 'write', offset: 1 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 62 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 0, length: 4 * KiB, data: { kind: 'seed', seed: 63 } },
    { op: 'write', offset: 2 * MiB, length: 8 * KiB, data: { kind: 'seed', seed: 64 } },
    { op: 'snapshot', name: 's2' },
    { op: 'write', offset: 4 * KiB, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 3 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 65 } },
    { op: 'snapshot', name: 's3' },
    { op: 'write', offset: 5 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 66 } },
    { op: 'revert', name: 's1' },
    { op: 'write', offset: 100, length: 50, data: { kind: 'seed', seed: 67 } },
    { op: 'write', offset: 2 * MiB + 10, length: 10, data: { kind: 'seed', seed: 68 } },
    { op: 'snapshot', name: 's4' },
    { op: 'write', offset: 1 * MiB, length: 100, data: { kind: 'seed', seed: 69 } },
  ],
};

/** Removed snapshots in the middle of the head's chain: still layers of the head's view. */
export const removed: Scenario = {
  name: 'removed',
  size: 8 * MiB,
  ops: [
    { op: 'write', offset: 0, length: 16 * KiB, data: { kind: 'seed', seed: 71 } },
    { op: 'write', offset: 1 * MiB, length: 8 * KiB, data: { kind: 'seed', seed: 72 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 4 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 73 } },
    { op: 'write', offset: 1 * MiB, length: 4 * KiB, data: { kind: 'zero' } },
    { op: 'snapshot', name: 's2' },
    { op: 'write', offset: 8 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 74 } },
    { op: 'write', offset: 2 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 75 } },
    { op: 'snapshot', name: 's3' },
    { op: 'write', offset: 2 * MiB + 100, length: 100, data: { kind: 'seed', seed: 76 } },
    { op: 'snapshot', name: 's4' },
    { op: 'remove', name: 's2' },
    { op: 'remove', name: 's3' },
    { op: 'write', offset: 12 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 77 } },
  ],
};

/**
 * Trims punch holes in the head, and the trimmed blocks fall through to the
 * snapshot below, or to the backing image, or to zeros past its end.
 */
export const trim: Scenario = {
  name: 'trim',
  size: 8 * MiB,
  backing: { format: 'raw', size: 2 * MiB, writes: [{ offset: 0, length: 1 * MiB, data: { kind: 'seed', seed: 81 } }] },
  ops: [
    { op: 'write', offset: 0, length: 32 * KiB, data: { kind: 'seed', seed: 82 } },
    { op: 'write', offset: 3 * MiB, length: 64 * KiB, data: { kind: 'seed', seed: 83 } },
    { op: 'snapshot', name: 's1' },
    { op: 'write', offset: 0, length: 64 * KiB, data: { kind: 'seed', seed: 84 } },
    { op: 'write', offset: 3 * MiB, length: 16 * KiB, data: { kind: 'zero' } },
    { op: 'write', offset: 5 * MiB, length: 8 * KiB, data: { kind: 'seed', seed: 85 } },
    { op: 'trim', offset: 1000, length: 20000 }, // blocks 1-4 -> s1
    { op: 'trim', offset: 32 * KiB, length: 32 * KiB }, // blocks 8-15 -> backing image
    { op: 'trim', offset: 3 * MiB, length: 16 * KiB }, // the zeros -> s1's data
    { op: 'trim', offset: 5 * MiB + 100, length: 4000 }, // no aligned block inside: nothing
    { op: 'write', offset: 8 * KiB, length: 4 * KiB, data: { kind: 'seed', seed: 86 } }, // a whole block into a trimmed one
    { op: 'snapshot', name: 's2' },
    { op: 'write', offset: 2 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 87 } },
    { op: 'trim', offset: 2 * MiB - 4 * KiB, length: 8 * KiB }, // past the backing image's end -> zeros
    { op: 'write', offset: 6 * MiB, length: 100, data: { kind: 'seed', seed: 88 } },
    { op: 'write', offset: 3 * MiB + 20 * KiB + 5, length: 10, data: { kind: 'seed', seed: 89 } }, // read-modify-write from s1
  ],
};

/** Twelve snapshots: head names go 000 .. 009, 010, 001, 002 (the engine keeps only the last digit). */
export const headWrap: Scenario = {
  name: 'head-wrap',
  size: 8 * MiB,
  ops: [
    ...Array.from({ length: 12 }, (_, i) => [
      { op: 'write' as const, offset: (i + 1) * 64 * KiB + i, length: 5000, data: { kind: 'seed' as const, seed: 90 + i } },
      { op: 'write' as const, offset: 64 * KiB + 1000 * i, length: 300, data: { kind: 'seed' as const, seed: 190 + i } },
      { op: 'snapshot' as const, name: `s${i + 1}` },
    ]).flat(),
    { op: 'write', offset: 7 * MiB, length: 4 * KiB, data: { kind: 'seed', seed: 999 } },
  ],
};

export const SCENARIOS: readonly Scenario[] = [
  noBacking,
  rawBacking,
  qcow2Backing,
  qcow2CompressedBacking,
  expand,
  revert,
  removed,
  trim,
  headWrap,
];
