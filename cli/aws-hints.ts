/**
 * The fix for the AWS SDK's set-up errors, which name neither what is missing nor how to give it
 * ("Region is missing", "Could not load credentials from any providers"): the CLI appends it to the
 * one line it prints. Other errors get no hint.
 */
export function awsHint(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  if (err.message === 'Region is missing')
    return 'no AWS region: pass --region where the command has it, or set AWS_REGION (or a region in your AWS profile)';
  if (err.name === 'CredentialsProviderError' || /^Could not load credentials from any providers/.test(err.message))
    return 'no AWS credentials: set AWS_PROFILE (after `aws configure` or `aws sso login`), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
  return undefined;
}
