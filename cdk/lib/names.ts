// Naming shared by the stack's modules.

/** `azure-openai` -> `AzureOpenai`: construct ids from the configuration's names. */
export function pascal(s: string): string {
  return s.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}

/**
 * A resource's name: `<project>-<env>-<what>` (`llm-gateway-prod-revocations`); the local stack names
 * its own `<project>-local-<what>`.
 */
export function resourceName(prefix: string, what: string): string {
  return `${prefix}-${what}`;
}
