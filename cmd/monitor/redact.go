package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/privacy"
)

func redactCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "redact",
		Short: "Work with the privacy settings' HMAC tokens",
	}
	var keyFile, configPath string
	lookup := &cobra.Command{
		Use:   "lookup ID...",
		Short: "Print the HMAC token of each customer id or entity key, to find it in the API, alerts or violation events topic",
		Long: "With privacy.identifiers: hmac, customer ids, entity keys and trigger event ids appear in the API,\n" +
			"the alerts and the violation events topic as hmac:<hex> tokens. lookup prints the token of each plain id\n" +
			"(one line: id, a tab, the token), read with the key of --hmac-key-file or of the configuration's\n" +
			"privacy.hmac_key_file. The API also takes the plain id: /api/v1/violations?customer=ID or ?key=ID.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			if keyFile == "" && configPath != "" {
				cfg, err := config.Load(configPath)
				if err != nil {
					return err
				}
				keyFile = cfg.Privacy.HMACKeyFile
			}
			if keyFile == "" {
				return errors.New("redact lookup needs --hmac-key-file, or --config with privacy.hmac_key_file")
			}
			key, err := privacy.ReadKey(keyFile)
			if err != nil {
				return err
			}
			for _, id := range ids {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", id, privacy.Token(key, id))
			}
			return nil
		},
	}
	lookup.Flags().StringVar(&keyFile, "hmac-key-file", "", "file holding the HMAC key")
	lookup.Flags().StringVar(&configPath, "config", "", "read privacy.hmac_key_file from this configuration")
	cmd.AddCommand(lookup)
	return cmd
}
