// Copied from Tests/PostgresWebSocketsTests/JWKVectors.swift, which
// scripts/mint-jwk-test-vectors.py printed (PyJWT 2.15.1, cryptography 50.0.2): two RSA-2048
// public keys and RS256 tokens signed by their private keys, which that run dropped. That file
// belongs to another test target, so the few values the integration tests need live here too.
/// Public keys and tokens for serving a JWK Set to a server under test. Every token claims
/// `{"mode":"r","channels":["a","b"],"exp":4102444800}`.
public enum JWKSTestKeys {
    public static let rsa1N =
        "s5QDlj5gINcF4_LsXaooRhF_Ez9vi9K57Gzram9cFKKifXOEg4YhW7tLlw10Tx45AHXMB10u0F4Lj5cIBnrG9diNrRsEUzxy1-h5c6Ceh5HSBQ5ZWiXR_nTbRmPVmDZ8nKuJMAJSKvni_Ikl2bEHPRDVFcebpn0BhDwYh1tyqHblTboISjlE0q-9H2PWDf1yHZjS-lAxf7-3QkrPwL4W0xUPnHYKz4DPgR3rdZWIk14SB12U8965qvXlytxYaI5zmz7zND-J7fwig9Vun_dyFLO0mU023hgBa0jMa8eLjbY9Uammih8qTgL6qch5G0SEUbm-gACyCrzah_6hB82FSQ"
    public static let rsa1E =
        "AQAB"
    public static let rsa2N =
        "wGRc3gemYQcvvFXpkUe3VNyzDRdlaY4fUsVqqD-aRs6Bo2gVJWUkXd6_JvD6IvGTPMQUXrYP2ieHN8LvAM_Ul3SVbxGgDXIN2DYXi80elHFFzBsTDrAH1nx_y7_QqvYtAIS2pFVabfb6SsyL0yXLBcNNHoWX7kdsgSXMqQ6iHxtx8BgZ1g4TfB8f_yiOSlPKg5IqtG95t4TCNit9snR34-0VZviYfhZRMnlcMsAnUsn12ldKaCSXJLKT1w-TFa7C86IXB3gYPUyeqnPdCSadaN86p7uqq-OB1zaG7sLk1ryEXVusRyYhX1FXgRdwkAljhqecaRzxC7XoWgjXj-Gwzw"
    public static let rsa2E =
        "AQAB"
    /// RS256, kid "rsa-1", signed with rsa1.
    public static let tokenRS256 =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIiwidHlwIjoiSldUIn0.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbImEiLCJiIl0sImV4cCI6NDEwMjQ0NDgwMH0.qJ7a7i52UhMCSPzVmshbhazIInR0LaHR0jCRtfILw1E6SSwnK9t4ZfG5IAyTQPGHDAUvf4CQuYBUZRU6rB16ra7Zd9BPzCmrJbN9Tbt20GTT8JBa0oHQA9BtbJHnbTYKZIfTrCApXWnfyp21ICP1HDhp4qsaFwwYyaovxRU9ZQ_wq18K3vJNThPSFIN9Z0URFNZSFaeehHjKKyG9k06cnnyAndbHRXUV7ubHIrDSuc6r23ap3gE2P03EuueznlyRXwwmNL6sx68N6qcyBWj36dTCji2oIKhszUxijF-70mRv0IxKc_MEIpDcCyaCewL9E9i6nbMvet606KTtusZNdQ"
    /// RS256, kid "rsa-2", signed with rsa2.
    public static let tokenRS256Key2 =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0yIiwidHlwIjoiSldUIn0.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbImEiLCJiIl0sImV4cCI6NDEwMjQ0NDgwMH0.lOTe4IeJbWz6TbZ2lmesl7OXx6aCjXQsqn_D3H2F6Ikk5cmX7x07ooF9rbPNxB5NdGXRohwSKjMmrDQABbKqgaBcG1o4R0olB_bi_h7CtLwxsHuO5m6klIG571oYjVA6O20wR8611wYc14pWgF-07YHYN25T-S6CQ8GkNsAsK8Qi4s72CIuekWFAtNlGLRMYdRLFj4UEnNspxPny0BuzjmZQ2qJyp1bfeeSEJ4gCcy6YP6mEAQKb_V11c2X8xDoben8ZIFiOYgKpwg8MIYqUZpjirP8p0LuMN9_tD7lepneg98Xj1ePlxbF89o97zVlU3ReVzhHaFZKkMKDMeKscqg"
    /// RS256, kid "rsa-9" (no key has it), signed with rsa1.
    public static let tokenUnknownKid =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS05IiwidHlwIjoiSldUIn0.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbImEiLCJiIl0sImV4cCI6NDEwMjQ0NDgwMH0.rKCaMQQ_PjWKJwstaxIJO7dT1Dc5VO7sxJAATY1s8cYxSUbHZbjvytIacqBAA0swwgrlYwojmtaL-BwWBJPSQCiP869nACDsxp-eE-vfrHo6cuetI-Kv1_u5lEO5rhvMz3UY262o2oBRc8fO8iH6B-zLX4uWllxAR33U-R2vBzrHOMVgv7DUMihmJ8kBbKrn4HVN-0xoz-oKWzrdbYv0_Sup93YnmfJra6si_k_WOg5ZDZxOCbms_hM8a5qGtiiUecISIkAExHDJkTTJkDLTZHjqQ6p88-WI4gisiVHYfRMqauP7tjm7da4fW6kIQ_vWG9d1Tlj3gkBiGspkcsdYJw"

    /// rsa1 as a JWK with kid "rsa-1".
    public static var rsa1: String { jwk(kid: "rsa-1", n: rsa1N, e: rsa1E) }
    /// rsa2 as a JWK with kid "rsa-2".
    public static var rsa2: String { jwk(kid: "rsa-2", n: rsa2N, e: rsa2E) }

    public static func jwk(kid: String, n: String, e: String) -> String {
        #"{"kty":"RSA","use":"sig","alg":"RS256","kid":"\#(kid)","n":"\#(n)","e":"\#(e)"}"#
    }

    /// A JWK Set document of `keys` (JWK texts).
    public static func jwks(_ keys: String...) -> String {
        #"{"keys":["# + keys.joined(separator: ",") + "]}"
    }
}
