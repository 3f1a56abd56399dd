/**
 * Debian's python3-skimage ships the real photographs (astronaut, coffee, chelsea…) that the
 * near-duplicate, hash-quality and similarity tests need. Off CI a machine without them skips those
 * tests and says why; under CI=true that skip would hide issue 23's must-show, so a missing set is an
 * error (`.ci/run` installs python3-skimage, as it installs chromium and wordnet-base).
 */
import { existsSync } from 'node:fs';
import { SKIMAGE_DATA } from '../../bench/hashes.ts';

export { SKIMAGE_DATA };

/** A skip reason where the photographs are missing (undefined where they are); throws under CI=true. */
export function skipWithoutPhotographs(): string | undefined {
  if (existsSync(SKIMAGE_DATA)) return undefined;
  if (process.env.CI === 'true') throw new Error(`CI=true and no photographs at ${SKIMAGE_DATA}: .ci/run installs python3-skimage`);
  return `${SKIMAGE_DATA} missing (apt-get install python3-skimage)`;
}
