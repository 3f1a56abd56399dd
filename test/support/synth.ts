/** The stack synthesized in-process for template tests; bundling is skipped (CI runs a real `cdk synth`). */
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { configFromContext } from '../../cdk/config.ts';
import { EffiTagStack } from '../../cdk/effitag-stack.ts';
import { applyNagAcknowledgements } from '../../cdk/nag.ts';

/** Synthesize with a context (cdk.json's keys, e.g. `effitag:tiersFile`), with cdk-nag's acknowledgements applied. */
export function synthStack(context: Record<string, unknown> = {}) {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [], ...context } });
  const config = configFromContext(app.node);
  const stack = new EffiTagStack(app, 'EffiTag', { config, env: { account: '111111111111', region: 'us-east-1' } });
  applyNagAcknowledgements(stack);
  return { app, config, stack, template: Template.fromStack(stack) };
}

/** The AwsSolutions rules the synthesized app still violates (none unacknowledged is the goal). */
export function nagViolations(app: App): string[] {
  return new AwsSolutionsChecks().validateScope(app).violations.map((v) => v.ruleName);
}
