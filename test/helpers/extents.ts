/**
 * Which 4 KiB blocks of a file are allocated, from FIEMAP (the call the
 * engine itself uses) through e2fsprogs' `filefrag`, so tests check real
 * holes without going through chainfs's own extent code.
 */
import { execFileSync } from 'node:child_process';

/** Sorted indexes of the allocated 4 KiB blocks of `file` (syncs it first, so delayed allocation is resolved). */
export function allocatedBlocks(file: string): number[] {
  const out = execFileSync('filefrag', ['-s', '-e', '-b4096', file], { encoding: 'utf8' });
  const blocks: number[] = [];
  // " ext:     logical_offset:        physical_offset: length:   expected: flags:"
  // "   0:        0..       2:    5877760..   5877762:      3:            "
  for (const m of out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) {
    for (let b = Number(m[1]); b <= Number(m[2]); b++) blocks.push(b);
  }
  return blocks.sort((a, b) => a - b);
}

/** Runs of consecutive blocks as [offset, length] byte pairs, the manifest's `data_extents` shape. */
export function blockRuns(blocks: number[], blockSize = 4096): [number, number][] {
  const runs: [number, number][] = [];
  for (const b of blocks) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === b * blockSize) last[1] += blockSize;
    else runs.push([b * blockSize, blockSize]);
  }
  return runs;
}
