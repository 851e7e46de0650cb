/** Kept for callers of the old path: the table lives in src/text.ts. */
export { table } from '../text';
