// Naming shared by the stack's modules.

/** `azure-openai` -> `AzureOpenai`: construct ids from the configuration's names. */
export function pascal(s: string): string {
  return s.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}
