#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/pem.h>

// EVP_PKEY_PUBLIC_KEY is a macro built from other macros, which Swift does not import.
static inline int pgws_evp_pkey_public_key_selection(void) {
    return EVP_PKEY_PUBLIC_KEY;
}

// An OSSL_PARAM_BLD keeps the key-name pointers it is given (into the OSSL_PARAM array it
// builds), so Swift passes libcrypto's static strings, not temporary copies of imported
// String constants.
static inline const char *pgws_param_rsa_n(void) { return OSSL_PKEY_PARAM_RSA_N; }
static inline const char *pgws_param_rsa_e(void) { return OSSL_PKEY_PARAM_RSA_E; }
static inline const char *pgws_param_group_name(void) { return OSSL_PKEY_PARAM_GROUP_NAME; }
static inline const char *pgws_param_pub_key(void) { return OSSL_PKEY_PARAM_PUB_KEY; }
#endif
