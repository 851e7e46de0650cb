import type { Layer } from '../layer/layer';

/**
 * One resolved run of a view: `length` bytes at `offset` whose content comes
 * from `layer` at the same offset, or are zeros when `layer` is null.
 */
export interface ResolvedRun {
  offset: number;
  length: number;
  layer: Layer | null;
}

/**
 * A flat image as its consumers (cat, FUSE, the materializer) see it:
 * a size, the resolved runs of any range, and reads.
 */
export interface ImageSource {
  readonly size: number;
  /**
   * The runs covering [offset, offset+length), in order, clipped to the
   * range and to `size`; adjacent runs never share the same layer.
   */
  runs(offset: number, length: number): ResolvedRun[];
  /** Fills buf[bufOffset, bufOffset+length) with the view's bytes at `position` (must be within size). */
  read(buf: Buffer, bufOffset: number, length: number, position: number): void;
}
