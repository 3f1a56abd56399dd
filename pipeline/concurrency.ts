/** Run `fn` over `items` with at most `limit` in flight, in order; after `signal` aborts, no new item starts. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>, signal?: AbortSignal): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length && !signal?.aborted) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}
