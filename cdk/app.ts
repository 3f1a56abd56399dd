/** CDK app entry: configuration from context, one stack, cdk-nag checks. No logic lives here. */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { configFromContext } from './config.ts';
import { EffiTagStack } from './effitag-stack.ts';
import { applyNagAcknowledgements } from './nag.ts';

const app = new App();
const stack = new EffiTagStack(app, app.node.tryGetContext('effitag:stackName') ?? 'EffiTag', {
  config: configFromContext(app.node),
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: 'EffiTag: EfficientNet tags for S3 uploads, written back as object metadata',
});
applyNagAcknowledgements(stack);
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
