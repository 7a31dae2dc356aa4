from countersign.mcp import main

main()
