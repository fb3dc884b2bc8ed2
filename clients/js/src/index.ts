export { AnonidClient, createClient, readProviderError } from "./client.js";
export type { ProviderRedirect, ProviderToken } from "./client.js";
export { AnonidError } from "./errors.js";
export { solveChallenge } from "./challenge.js";
export type { Challenge } from "./challenge.js";
export { memoryStorage } from "./tokens.js";
export { passkeysSupported } from "./webauthn.js";
export type {
  AuthChangeCallback,
  AuthEvent,
  ClientOptions,
  Conversion,
  SignInResult,
  StoredSession,
  TokenStorage,
  User,
} from "./types.js";
