/**
 * Print the README's deploy command block as cdk/deploy-steps.ts renders it, or with `--write`
 * put it into README.md (test/deploy-steps.test.ts fails while the two differ).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderDeploySteps, withDeployBlock } from '../cdk/deploy-steps.ts';

const readmePath = join(import.meta.dirname, '..', 'README.md');
if (process.argv.includes('--write')) {
  const before = readFileSync(readmePath, 'utf8');
  const after = withDeployBlock(before);
  if (after !== before) writeFileSync(readmePath, after);
  process.stdout.write(after === before ? 'README.md: deploy block already current\n' : 'README.md: deploy block rewritten\n');
} else {
  process.stdout.write(`${renderDeploySteps()}\n`);
}
