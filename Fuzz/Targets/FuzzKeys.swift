/// Signing keys made once for the fuzz targets (`openssl genpkey`), so a crash reproduces with
/// the keys it was found with. Test keys only: they sign nothing but fuzz inputs.
enum FuzzKeys {
    static let hmacSecret = Array("fuzz-target-hmac-secret-of-a-usable-length-64-bytes-0123456789ab".utf8)
    static let rsaPEM = """
        -----BEGIN PRIVATE KEY-----
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCIZKXBQFZ4PV1M
        f3rv+eZ7aGo3FB4uNNaR2sk/W3B3nrvWm5/VuY04pQPlNOluQGQ1L7xCa2qmCno1
        T5SYcyVX06u5yPg7AXLE8ZbKCDNwmkzBedB7xpkBh3it+MCCSuf29XDaUeNfGNJW
        B++d5D7jH2Sw9gK1ShPjevbQCLjLUmfn4m7Hro6OA/tw1C2usJI49fDGp7+Vh+mC
        O5a7AGVOucyQI8Z3u9u5TP79G2tj8AD7XTHbWarZjbDT/ba3U6eyfXMfzQRtinKq
        LDt+7TXQO4TFia4jlWkeojxFoBkM9y/woSYNi9gGhgtVFVrth3dmSmPdAMa0K0gc
        Bt0CoxY5AgMBAAECggEAJEZQZ0NLPBNl+vB0q9pU2EF+7kMle7iF0KjVmUoicU4A
        OyWMrvT4gDYzAQS/iJkLjbGyah/Tb3Gd6wvNQ3ZsWh1rsK+ohVjvQz3Vksn3lF0V
        SOey8RhynRuAlxRvbrepVd8VMptQ03vwhPz7V4zaxOEWkJH9SmX3QCr19YI8U6al
        m6iRy6Mfp92+bFN3J5UgN5E7qUgs/S0t34hgy3SbcKRcxav8D49t5hozCCwK/QJ1
        Qswy9Gi+ZoOEXACrrCBEfjVviHtHoo5oWO5McPE4YmTtXskf9f5cFncEccv0pRH8
        lItZMEDfR+PnmocvxTJHevi0EzD5SY1NjWLIEvq++QKBgQC/V2ON17Kwik+FK0tq
        H9PPW3aRq+8KYs7QMDsW+UgVwhoovelWXUqP3VCeX5oEjld3S0CuCNPHFIuh2Kmb
        Prpjkrkwmv2nYYHP0gYnE8T7yOWkOSv6TD+AcDkyP6e0gG9+hcjiZ1gFFswSabxW
        y5Qq41U96HAARDnSFSzsl3xULwKBgQC2e8itAAJIA1T19k/9hziHz+Azn1Ivsy0G
        c4tKF3kr5kckilZgipo5IAuis+cM363yrw/UJy9mHaHujyfuwE2Wg1F/NUBlNy84
        myDNMjvq5ib4I+6ROK2t3HQZm/sPM1bgpNxZ68pCIztvDsqS+dLrBzMVgdASCjXM
        s4K0UlFaFwKBgHBaDfjx2NjUvhDB9UxhV+wAFsU+oeQFVM7mIyxAP9WW3eliairu
        KKQFHhuAo11df3pq05XdVQ0mwT7Ni/m+gY+KTfd+asbn+GNhPX+gmiAGPOGLOImG
        UBtIyiz5N65DZDR0thpK+GI0mquNLqwAagYs6papb2qYpSL4kCJ0aOq9AoGAIUm1
        UrGkuOQ6tF+JOfNXwZaPDHusr1zdAsdDCnH7vaFVKvo9RYEjHvaUiMqOhE+tWI7M
        sWOwhs0zA+SDYU8dGC6+SBk7tPr7FzVdJ3FZcsEnLK7JTx5quEN1vlIw2xX/bB1G
        wPR9QdFRfzHQjD0cV5lJnUu/2/qW08+PMTuu8WMCgYEAgbqnRGTCAo74NiYPwF1l
        QbdmETPsVIPYys0TKLuUs5LI1APKeFL84OqEVflrUXOJvfiqSQqHECQYQIAPZ8rr
        ZDgxUouEe9vm+MA8CdG69JOsrht1S5Z9eT8DBkcxKh6sJPY1gkV+6uPNAVnKMdDS
        VKVumyJAAtI9o64aj8dgf7w=
        -----END PRIVATE KEY-----
        """
    static let ecPEM = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgke/DBzicmGveHrdP
        AH0QGiGulGij6SFD2QZg8n617n6hRANCAAQhlbVSbp/2zUvqeAuu8sAfvtQwugcB
        9EAjm2s8H0naZvTq05JH3xgt2s2mKFEWrbOGF3HFhZGQUy+p5fkxFGoj
        -----END PRIVATE KEY-----
        """
    static let edPEM = """
        -----BEGIN PRIVATE KEY-----
        MC4CAQAwBQYDK2VwBCIEIHa1e1/Mqv0ZpnQU7BOHQBJTGqQYK+02To40tzEmfRgJ
        -----END PRIVATE KEY-----
        """
}
