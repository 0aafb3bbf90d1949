// The login mini program. Its pages keep no global state: the session lives in
// storage (utils/session.js), the configuration in config.js.
App({})
