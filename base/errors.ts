/**
 * Error rendering, on the ground floor so every layer renders a failure the same way (model,
 * inference and tiers included, which cannot import the pipeline).
 */

/**
 * An error's message (or the thrown value, stringified): what logs, recorded reasons and the CLI's
 * one-line errors carry. No `Error:` prefix and no stack: the stack is for EFFITAG_DEBUG.
 */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
